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
        let start = Instant::now();
        let out = map(&items, 20, |n| {
            std::thread::sleep(Duration::from_millis(50));
            n * 2
        });
        assert_eq!(out, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        // 40 sleeps of 50 ms, 20 at a time: about 100 ms, far from 2 s.
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        assert!(map(&[] as &[u8], 4, |_| 0u8).is_empty());
    }
}
