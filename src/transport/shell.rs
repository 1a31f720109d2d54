//! A shell that stays open on a node and runs one command line after another, so a
//! command costs a fork on the node instead of a new `ssh` process here and a new
//! session there (about 10 ms of CPU for the pair, measured: a gate reads 53 nodes, a
//! rotation of 3 + 50 runs ~2,600 commands).
//!
//! Each command line runs in a subshell of the open `sh` with its own standard input
//! (`/dev/null`, or the bytes given, carried as base64 in the line); after it, the shell
//! prints a random mark and the exit code on standard output, and the mark on standard
//! error. Two threads read the two pipes and cut them at the marks, so a full pipe never
//! stalls the node and a command's output is known to be whole. A command that outlives
//! its time limit, or a shell that ends, leaves the [`Shell`] unusable: the caller drops
//! it (the process is killed) and opens another.

use super::Output;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// How a [`Shell`] stopped serving.
#[derive(Debug)]
pub enum Ended {
    /// The command did not finish in time (the shell was killed).
    TimedOut,
    /// The shell ended (for `ssh`: the connection failed, code 255): its exit code and
    /// what it said last.
    Exited(Option<i32>, Vec<u8>),
}

/// One part of a pipe, up to a mark (`Err`: the pipe ended; what was left).
type Part = Result<Vec<u8>, Vec<u8>>;

/// An open shell.
pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<Part>,
    err: Receiver<Part>,
    mark: String,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mark no command prints by chance (128 bits of [`crate::unique::digest`]).
fn mark() -> String {
    format!(
        "trustform-{}",
        hex::encode(&crate::unique::digest(b"shell mark")[..16])
    )
}

/// Read `pipe` and send each part that ends with `{before}{mark}\n`; at the end of the
/// pipe, send what is left as `Err`.
fn cut(mut pipe: impl Read + Send + 'static, before: &str, mark: &str) -> Receiver<Part> {
    let (tx, rx) = channel();
    let pattern = format!("{before}{mark}\n").into_bytes();
    std::thread::spawn(move || {
        let mut buf: Vec<u8> = vec![];
        let mut chunk = vec![0u8; 64 * 1024];
        // Where the search for the mark starts again.
        let mut from = 0;
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Err(buf));
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while let Some(at) = buf[from..]
                .windows(pattern.len())
                .position(|w| w == pattern)
                .map(|i| i + from)
            {
                let rest = buf.split_off(at + pattern.len());
                buf.truncate(at);
                if tx.send(Ok(std::mem::replace(&mut buf, rest))).is_err() {
                    return;
                }
                from = 0;
            }
            from = buf.len().saturating_sub(pattern.len());
        }
    });
    rx
}

impl Shell {
    /// Start `cmd`, which must run a POSIX shell reading commands from its standard input
    /// (for ssh: `ssh … -- exec sh`).
    pub fn start(mut cmd: Command) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mark = mark();
        let stdin = child.stdin.take().expect("stdin piped");
        let out = cut(child.stdout.take().expect("stdout piped"), " ", &mark);
        let err = cut(child.stderr.take().expect("stderr piped"), "\n", &mark);
        Ok(Self {
            child,
            stdin,
            out,
            err,
            mark,
        })
    }

    /// Run the command `line` (shell syntax) with `stdin` as its standard input, within
    /// `timeout`.
    pub fn run(
        &mut self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, Ended> {
        use base64::Engine;
        let input = match stdin {
            Some(bytes) => format!(
                "printf %s {} | base64 -d | ",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            None => String::new(),
        };
        let redirect = if stdin.is_some() { "" } else { " </dev/null" };
        let text = format!(
            "{input}( eval {} ){redirect}; printf '\\n%s %s\\n' \"$?\" {m}; printf '\\n%s\\n' {m} >&2\n",
            super::ssh::quote(line),
            m = self.mark,
        );
        if self.stdin.write_all(text.as_bytes()).is_err() || self.stdin.flush().is_err() {
            return Err(self.ended());
        }
        let stdout = match self.out.recv_timeout(timeout) {
            Ok(Ok(part)) => part,
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            Err(RecvTimeoutError::Timeout) => return Err(Ended::TimedOut),
        };
        let Some((stdout, code)) = split_code(stdout) else {
            return Err(self.ended());
        };
        let stderr = match self.err.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(part)) => part,
            _ => return Err(self.ended()),
        };
        Ok(Output {
            code: Some(code),
            stdout,
            stderr,
        })
    }

    /// The shell has ended: its code and its last words.
    fn ended(&mut self) -> Ended {
        let mut said = vec![];
        while let Ok(part) = self.err.recv_timeout(Duration::from_secs(2)) {
            match part {
                Ok(p) => said.extend(p),
                Err(p) => {
                    said.extend(p);
                    break;
                }
            }
        }
        let start = std::time::Instant::now();
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s.code(),
                Ok(None) if start.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break None,
            }
        };
        Ended::Exited(code, said)
    }
}

/// A part of standard output is the command's output, `\n`, and its exit code (the line
/// of the mark): split them.
fn split_code(mut part: Vec<u8>) -> Option<(Vec<u8>, i32)> {
    let nl = part.iter().rposition(|&b| b == b'\n')?;
    let code = std::str::from_utf8(&part[nl + 1..]).ok()?.parse().ok()?;
    part.truncate(nl);
    Some((part, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Shell {
        let mut c = Command::new("sh");
        c.args(["-c", "exec sh"]);
        Shell::start(c).unwrap()
    }

    #[test]
    fn commands_run_one_after_another_with_their_own_output_and_code() {
        let mut s = sh();
        let t = Duration::from_secs(10);
        let o = s.run("echo hello; echo oops >&2; exit 3", None, t).unwrap();
        assert_eq!(
            (o.code, o.stdout.as_slice(), o.stderr.as_slice()),
            (Some(3), &b"hello\n"[..], &b"oops\n"[..])
        );
        // No trailing newline, binary bytes, and a variable that does not leak.
        let o = s.run("x=1; printf 'a\\000b'", None, t).unwrap();
        assert_eq!((o.code, o.stdout.as_slice()), (Some(0), &b"a\0b"[..]));
        let o = s.run("echo \"${x:-unset}\"", None, t).unwrap();
        assert_eq!(o.text(), "unset\n");
        // Standard input: the bytes given, else nothing.
        let bytes: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let o = s.run("cat", Some(&bytes), t).unwrap();
        assert_eq!(o.stdout, bytes);
        let o = s.run("cat; echo done", None, t).unwrap();
        assert_eq!(o.text(), "done\n");
        // A large output on both pipes at once does not stall.
        let o = s
            .run(
                "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2",
                None,
                t,
            )
            .unwrap();
        assert_eq!((o.stdout.len(), o.stderr.len()), (300_000, 300_000));
        // A syntax error fails that command only.
        let o = s.run("if then", None, t).unwrap();
        assert_ne!(o.code, Some(0));
        assert_eq!(s.run("echo still", None, t).unwrap().text(), "still\n");
    }

    #[test]
    fn a_slow_command_times_out_and_an_ended_shell_says_so() {
        let mut s = sh();
        let start = std::time::Instant::now();
        assert!(matches!(
            s.run("sleep 5", None, Duration::from_millis(200)),
            Err(Ended::TimedOut)
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
        let mut s = sh();
        match s.run("echo bye >&2; exit 7", None, Duration::from_secs(10)) {
            Ok(o) => assert_eq!(o.code, Some(7), "a subshell's exit is its own"),
            Err(e) => panic!("{e:?}"),
        }
        let mut c = Command::new("sh");
        c.args(["-c", "echo cannot connect >&2; exit 255"]);
        let mut s = Shell::start(c).unwrap();
        match s.run("true", None, Duration::from_secs(10)) {
            Err(Ended::Exited(code, said)) => {
                assert_eq!(code, Some(255));
                assert_eq!(String::from_utf8_lossy(&said), "cannot connect\n");
            }
            other => panic!("{other:?}"),
        }
    }
}
