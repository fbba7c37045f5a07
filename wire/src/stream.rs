//! Flow control of byte streams tunnelled through the master (`bramble exec`): pure credit
//! accounting, no I/O.
//!
//! Each direction has a window: the sender keeps at most [`WINDOW`] bytes that the final
//! receiver has not acknowledged ([`Credit`]); the receiver acknowledges what it consumed in
//! batches ([`Acks`]). The master in the middle counts the same bytes and acknowledgements with
//! its own [`Credit`] and ends a session whose sender overruns the window, so a fast producer
//! (or a peer that ignores credit) never makes it buffer more than a window per session.

/// The largest data chunk of one frame.
pub const CHUNK: usize = 16 * 1024;
/// Bytes a sender may have unacknowledged.
pub const WINDOW: u32 = 256 * 1024;

/// The sender's (or the relay's) view of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    window: u32,
    in_flight: u32,
}

/// The peer broke the protocol: more bytes than the window, or more acknowledged than sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// Bytes beyond the window.
    Window,
    /// An acknowledgement of bytes never sent.
    Ack,
}

impl Credit {
    /// A window of `window` bytes, nothing in flight.
    pub const fn new(window: u32) -> Credit {
        Credit {
            window,
            in_flight: 0,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u32 {
        self.window - self.in_flight
    }

    /// Bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// How much of `want` bytes to send in the next chunk (at most [`CHUNK`] and the credit
    /// left; 0 = wait for an acknowledgement). Counts them as in flight.
    pub fn take(&mut self, want: usize) -> usize {
        let n = want.min(CHUNK).min(self.available() as usize);
        self.in_flight += n as u32;
        n
    }

    /// `n` bytes passed (the relay's check): an error if they exceed the window.
    pub fn sent(&mut self, n: usize) -> Result<(), Overrun> {
        let n = u32::try_from(n).map_err(|_| Overrun::Window)?;
        if n > self.available() {
            return Err(Overrun::Window);
        }
        self.in_flight += n;
        Ok(())
    }

    /// The receiver consumed `n` bytes.
    pub fn ack(&mut self, n: u32) -> Result<(), Overrun> {
        if n > self.in_flight {
            return Err(Overrun::Ack);
        }
        self.in_flight -= n;
        Ok(())
    }
}

impl Default for Credit {
    fn default() -> Credit {
        Credit::new(WINDOW)
    }
}

/// The receiver's batching of acknowledgements: one per quarter window consumed, so the sender
/// never waits while the receiver keeps up and the acknowledgements cost few frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acks {
    pending: u32,
}

impl Acks {
    /// `n` bytes consumed; returns an acknowledgement to send, if one is due.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.pending = self.pending.saturating_add(n as u32);
        if self.pending >= WINDOW / 4 {
            Some(core::mem::take(&mut self.pending))
        } else {
            None
        }
    }

    /// What is consumed and not yet acknowledged (to flush when the stream goes idle).
    pub fn flush(&mut self) -> Option<u32> {
        (self.pending > 0).then(|| core::mem::take(&mut self.pending))
    }
}

/// The shell's exit code of a process: its status, or 128 + the signal that killed it.
pub fn exit_code(status: Option<i32>, signal: Option<u8>) -> i32 {
    match (status, signal) {
        (_, Some(s)) => 128 + i32::from(s),
        (Some(c), None) => c,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_never_exceeds_the_window() {
        let mut c = Credit::new(40_000);
        assert_eq!(c.take(100_000), CHUNK);
        assert_eq!(c.take(100_000), CHUNK);
        assert_eq!(c.take(100_000), 40_000 - 2 * CHUNK);
        assert_eq!(c.take(100_000), 0);
        c.ack(1000).unwrap();
        assert_eq!(c.take(5), 5);
        assert_eq!(c.take(100_000), 995);
        assert_eq!(c.in_flight(), 40_000);
    }

    #[test]
    fn relay_refuses_overrun_and_bogus_acks() {
        let mut c = Credit::new(10);
        c.sent(6).unwrap();
        assert_eq!(c.sent(5), Err(Overrun::Window));
        c.sent(4).unwrap();
        assert_eq!(c.ack(11), Err(Overrun::Ack));
        c.ack(10).unwrap();
        assert_eq!(c.available(), 10);
    }

    #[test]
    fn acks_batch_by_quarter_window_and_flush() {
        let mut a = Acks::default();
        let q = (WINDOW / 4) as usize;
        assert_eq!(a.consumed(q - 1), None);
        assert_eq!(a.consumed(2), Some(q as u32 + 1));
        assert_eq!(a.flush(), None);
        assert_eq!(a.consumed(3), None);
        assert_eq!(a.flush(), Some(3));
    }

    #[test]
    fn a_sender_and_receiver_never_stall() {
        // Receiver acks in batches; sender always has credit for more while the receiver
        // keeps up.
        let (mut c, mut a) = (Credit::default(), Acks::default());
        let mut total = 0usize;
        for _ in 0..1000 {
            let n = c.take(usize::MAX);
            assert!(n > 0, "stalled after {total} bytes");
            total += n;
            if let Some(k) = a.consumed(n) {
                c.ack(k).unwrap();
            }
        }
        assert_eq!(total, 1000 * CHUNK);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(Some(3), None), 3);
        assert_eq!(exit_code(None, Some(9)), 137);
        assert_eq!(exit_code(None, None), 1);
    }
}
