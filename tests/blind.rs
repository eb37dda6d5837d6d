//! Writes no tracker can see, said rather than silent: a C target whose buffer is registered
//! with io_uring and filled by IORING_OP_READ_FIXED (the kernel writes through the pin, no
//! page fault), found at attach and while tracking.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Lines of a child's stream, read on a thread, so that a test waits with a timeout.
fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line that `want` accepts, within 10 s.
fn next_line(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if want(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no {what}: {e}"),
        }
    }
}

/// The io_uring target, with a 1 MiB data file; None (the reason printed) where it cannot run.
struct Target {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
    buffer: (u64, u64),
    _dir: tempfile::TempDir,
}

impl Target {
    fn start(late: bool) -> Option<Target> {
        if !kernel_can_track() {
            return None;
        }
        if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            && v.trim() == "2"
        {
            skipped("io_uring is disabled (kernel.io_uring_disabled = 2)");
            return None;
        }
        let exe = c_build("io_uring_fixed", &[])?;
        let dir = scratch();
        let data = dir.path().join("data");
        std::fs::write(&data, vec![0xa5u8; 1 << 20]).unwrap();
        let mut child = Command::new(&exe)
            .arg(&data)
            .arg("256")
            .args(late.then_some("late"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = lines(child.stdout.take().unwrap());
        let line = match out.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let status = child.wait().unwrap();
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                if status.code() == Some(3) {
                    // The kernel refused io_uring_setup or IORING_REGISTER_BUFFERS.
                    skipped(format!("the kernel refuses io_uring here: {}", err.trim()));
                    return None;
                }
                panic!("the io_uring target failed ({status}): {err}");
            }
        };
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], "buffer", "{line}");
        let start = hex(&Value::from(f[1]));
        Some(Target {
            child,
            stdin,
            out,
            buffer: (start, start + 256 * 4096),
            _dir: dir,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send one command byte and wait for its acknowledgement; a kernel refusal skips.
    fn send(&mut self, byte: u8, ack: &str) -> Option<String> {
        self.stdin.write_all(&[byte]).unwrap();
        self.stdin.flush().unwrap();
        match self.out.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                assert!(line.starts_with(ack), "{line}");
                Some(line)
            }
            Err(_) if self.child.wait().unwrap().code() == Some(3) => {
                skipped("the kernel refuses io_uring here (setup or register)");
                None
            }
            Err(e) => panic!("no {ack}: {e}"),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `track --pid` of the target, its records and stderr lines as they come.
fn tracker(pid: i32) -> (Child, Receiver<String>, Receiver<String>) {
    let mut t = uffd_dirty()
        .args(["track", "-f", "json", "--interval=20ms", "--pid"])
        .arg(pid.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(t.stdout.take().unwrap());
    let err = lines(t.stderr.take().unwrap());
    (t, out, err)
}

fn stop(mut t: Child, out: &Receiver<String>, seen: &mut Vec<Value>) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
    assert!(t.wait().unwrap().success());
    seen.extend(
        out.iter()
            .map(|l| serde_json::from_str::<Value>(&l).unwrap()),
    );
    for r in seen.iter() {
        assert_schema(r);
    }
}

/// Pages of `buffer` reported by the deltas among `records`.
fn buffer_pages(records: &[Value], buffer: (u64, u64)) -> u64 {
    records
        .iter()
        .filter(|r| r["type"] == "delta")
        .flat_map(|r| r["ranges"].as_array().unwrap().clone())
        .map(|r| {
            let (s, e) = (hex(&r["start"]).max(buffer.0), hex(&r["end"]).min(buffer.1));
            e.saturating_sub(s) / 4096
        })
        .sum()
}

fn is_io_uring(b: &Value, buffer: (u64, u64)) {
    assert_eq!(b["kind"], "io_uring", "{b}");
    assert!(b["fd"].as_i64().is_some_and(|fd| fd >= 3), "{b}");
    assert!(b["detail"].as_str().unwrap().contains("registered buffer"));
    let r = &b["ranges"][0];
    assert_eq!((hex(&r["start"]), hex(&r["end"])), buffer, "{b}");
}

#[test]
fn registered_io_uring_buffers_are_announced_at_attach() {
    let Some(mut target) = Target::start(false) else {
        return;
    };
    let (t, out, err) = tracker(target.pid());
    let start: Value = serde_json::from_str(&next_line(&out, "start record", |l| {
        l.contains("\"start\"")
    }))
    .unwrap();
    let blind = start["blind"].as_array().expect("a blind field");
    assert_eq!(blind.len(), 1, "{start}");
    is_io_uring(&blind[0], target.buffer);
    let warning = next_line(&err, "warning", |_| true);
    assert!(
        warning.starts_with("uffd-dirty: warning: PID ") && warning.contains("io_uring fd"),
        "{warning}"
    );
    // The blind spot itself: the kernel's READ_FIXED into the buffer is not reported; the
    // CPU's writes to the same pages afterwards are.
    let mut records = vec![start];
    let read = target.send(b'r', "read").unwrap();
    assert_eq!(read, "read 1048576");
    let seq_after = |records: &[Value]| {
        records
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .next_back()
            .unwrap_or(0)
    };
    records.push(
        serde_json::from_str(&next_line(&out, "delta", |l| l.contains("\"delta\""))).unwrap(),
    );
    // Five more deltas: whatever was written by then has been harvested.
    let five_more = |records: &mut Vec<Value>| {
        let from = seq_after(records);
        while seq_after(records) < from + 5 {
            records.push(
                serde_json::from_str(&out.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap(),
            );
        }
    };
    five_more(&mut records);
    let unseen = buffer_pages(&records, target.buffer);
    target.send(b'w', "wrote").unwrap();
    five_more(&mut records);
    stop(t, &out, &mut records);
    let seen = buffer_pages(&records, target.buffer) - unseen;
    eprintln!("READ_FIXED of 256 pages: {unseen} reported; CPU writes of them: {seen} reported");
    assert_eq!(
        unseen, 0,
        "the kernel's write through the pin was seen after all"
    );
    assert_eq!(seen, 256);
    assert_eq!(err.try_iter().count(), 0, "one warning only");
}

#[test]
fn an_io_uring_registered_while_tracking_is_announced() {
    let Some(mut target) = Target::start(true) else {
        return;
    };
    let (t, out, err) = tracker(target.pid());
    let start: Value = serde_json::from_str(&next_line(&out, "start record", |l| {
        l.contains("\"start\"")
    }))
    .unwrap();
    assert_eq!(start["blind"], Value::Array(vec![]), "{start}");
    if target.send(b'g', "registered").is_none() {
        let mut t = t;
        let _ = t.kill();
        let _ = t.wait();
        return;
    }
    // Looked for at most once a second.
    let found: Value = serde_json::from_str(&next_line(&out, "blind record", |l| {
        l.contains("\"blind\"")
    }))
    .unwrap();
    is_io_uring(&found, target.buffer);
    let warning = next_line(&err, "warning", |_| true);
    assert!(warning.contains("io_uring fd"), "{warning}");
    let mut records = vec![start, found];
    stop(t, &out, &mut records);
    assert_eq!(
        records.iter().filter(|r| r["type"] == "blind").count(),
        1,
        "announced once"
    );
    assert_eq!(err.try_iter().count(), 0, "one warning only");
}

#[test]
fn pinned_memory_without_its_fd_is_announced_as_pinned() {
    let Some(mut target) = Target::start(false) else {
        return;
    };
    // The ring outlives its fd through its mappings; only VmPin still shows the buffer.
    target.send(b'c', "closed").unwrap();
    let (t, out, err) = tracker(target.pid());
    let start: Value = serde_json::from_str(&next_line(&out, "start record", |l| {
        l.contains("\"start\"")
    }))
    .unwrap();
    let blind = start["blind"].as_array().expect("a blind field");
    assert_eq!(blind.len(), 1, "{start}");
    assert_eq!(blind[0]["kind"], "pinned", "{start}");
    assert!(
        blind[0]["detail"].as_str().unwrap().starts_with("1024 kB"),
        "{start}"
    );
    let warning = next_line(&err, "warning", |_| true);
    assert!(warning.contains("pinned long-term (VmPin)"), "{warning}");
    stop(t, &out, &mut vec![start]);
}
