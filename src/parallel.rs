//! Work that waits on nodes (a transport's round trips, a handshake through it) runs
//! many items at once on scoped threads: [`map`].

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` of every item, at most `threads` at a time, results in the items' order. A
/// panic in `f` is propagated.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, items.len().max(1));
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn results_keep_the_order_and_the_items_run_at_once() {
        let items: Vec<u64> = (0..40).collect();
        // Each item waits until 20 items have run at once (a map that ran them one by one
        // would never get there): the witness, instead of the wall time of 40 sleeps.
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = map(&items, 20, |n| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(30);
            while peak.load(Ordering::SeqCst) < 20 {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for 20 items at once (at most {} so far)",
                    peak.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            running.fetch_sub(1, Ordering::SeqCst);
            n * 2
        });
        assert_eq!(out, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(peak.into_inner(), 20, "at most `threads` at a time");
        assert!(map(&[] as &[u8], 4, |_| 0u8).is_empty());
    }
}
