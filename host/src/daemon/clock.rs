//! The guest's wall clock, kept in step with the desktop's for the VM's life.
//!
//! A VM's clock stands still whenever its vCPUs do: while the desktop sleeps
//! (the VMM sleeps with it) and while the VM is paused (QMP `stop`; under
//! TCG the guest's clock stops entirely). After the resume the guest's
//! `CLOCK_REALTIME` is behind by the whole pause: TLS certificates "not yet
//! valid", `make` puzzled by mtimes from the future, tokens expired early.
//! The boot sets the clock once (`vmctl.time` on the kernel command line,
//! then [`super::guest::sync_time`]); this task keeps it there:
//!
//! - every [`PERIOD`] the daemon asks the guest's time (one line each way
//!   on a [`ControlRequest::Clock`] connection to the control port, kept
//!   open for the VM's life: no connection set up and torn down each
//!   second) and compares it with the desktop's clock at the round trip's
//!   midpoint;
//! - off by more than [`STEP`] beyond that round trip's own uncertainty, it
//!   steps the guest's clock ([`ControlRequest::SetTime`]) to the desktop's
//!   plus half the round trip, and logs the offset it corrected;
//! - a paused guest does not answer: the question stays open (up to
//!   [`ASK_LIMIT`], then the connection is opened again and the guest asked
//!   at once), so it is answered moments after the resume. A round trip that
//!   long says little, so the guest is asked again straight away and that
//!   answer decides;
//! - the desktop's sleep shows as `CLOCK_BOOTTIME` running ahead of
//!   `CLOCK_MONOTONIC` (macOS: `CLOCK_MONOTONIC` ahead of
//!   `CLOCK_UPTIME_RAW`): the wait for the next question is cut short.
//!
//! So a pause longer than a period always finds a question open and is
//! corrected right after the resume; a shorter one leaves the clock off by
//! less than a period, until the next question at most a period later.
//!
//! Nothing else needs a kick after a resume: each forwarded connection and
//! each Docker API connection opens its own vsock stream, and the port
//! watch reconnects by itself when its stream breaks
//! ([`crate::forward::watch`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vmctl_proto::control::{ClockReading, ControlRequest};
use vmctl_proto::VSOCK_PORT_CONTROL;

use super::guest::{self, GuestError};
use crate::vsock::{GuestStream, VsockTransport};

/// How often the guest's clock is looked at.
pub const PERIOD: Duration = Duration::from_secs(1);

/// How far off the guest's clock may be before it is stepped.
pub const STEP: Duration = Duration::from_millis(50);

/// How long one question may stay open (a paused VM answers at its resume).
const ASK_LIMIT: Duration = Duration::from_secs(30);

/// A round trip longer than this (the VM was paused meanwhile) is asked
/// again at once rather than trusted.
const TRUSTED_RTT: Duration = Duration::from_millis(250);

/// How often, while waiting for the next question, the desktop's sleep is
/// checked for (two clock reads, no I/O).
const WAKE_CHECK: Duration = Duration::from_millis(250);

/// Sleep shorter than this is not worth a word.
const SLEEP_NOTICED: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("opening a clock connection to the guest")]
    Open(#[source] GuestError),
    #[error("the guest refused a clock connection: {0}")]
    Refused(String),
    #[error("reading the guest's clock")]
    Read(#[source] std::io::Error),
    #[error("the guest's clock reading is malformed")]
    Malformed(#[source] serde_json::Error),
    #[error("setting the guest's clock")]
    Set(#[source] GuestError),
}

/// One look at the guest's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The guest's clock minus the desktop's, in nanoseconds (negative: the
    /// guest is behind).
    pub offset_ns: i128,
    /// The question's round trip: the offset is known to within half of it.
    pub rtt: Duration,
}

impl Sample {
    /// Whether the guest is off by more than `step`, for certain.
    pub fn off_by_more_than(&self, step: Duration) -> bool {
        self.offset_ns.unsigned_abs() > (step + self.rtt / 2).as_nanos()
    }

    fn offset_ms(&self) -> i64 {
        (self.offset_ns / 1_000_000) as i64
    }
}

/// A [`ControlRequest::Clock`] connection: one line asks, one line answers.
pub struct ClockStream {
    reader: BufReader<GuestStream>,
}

impl ClockStream {
    pub async fn open(transport: &dyn VsockTransport) -> Result<ClockStream, ClockError> {
        let stream = transport
            .connect(VSOCK_PORT_CONTROL)
            .await
            .map_err(|e| ClockError::Open(GuestError::Connect(e)))?;
        let (response, reader) = guest::call_on(stream, &ControlRequest::Clock)
            .await
            .map_err(ClockError::Open)?;
        if !response.ok {
            return Err(ClockError::Refused(response.error.unwrap_or_default()));
        }
        Ok(ClockStream { reader })
    }

    /// Asks the guest's time once.
    pub async fn sample(&mut self) -> Result<Sample, ClockError> {
        let sent = unix_nanos(SystemTime::now());
        let started = Instant::now();
        let stream = self.reader.get_mut();
        stream.write_all(b"\n").await.map_err(ClockError::Read)?;
        stream.flush().await.map_err(ClockError::Read)?;
        let mut line = String::new();
        let n = vmctl_proto::line::read_line(&mut self.reader, &mut line)
            .await
            .map_err(ClockError::Read)?;
        if n == 0 {
            return Err(ClockError::Read(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let rtt = started.elapsed();
        let reading: ClockReading = serde_json::from_str(&line).map_err(ClockError::Malformed)?;
        let midpoint = sent + rtt.as_nanos() / 2;
        Ok(Sample {
            offset_ns: i128::from(reading.unix_nanos) - midpoint as i128,
            rtt,
        })
    }
}

/// Asks on `clock`, opening it first when there is none.
async fn ask(
    transport: &dyn VsockTransport,
    clock: &mut Option<ClockStream>,
) -> Result<Sample, ClockError> {
    let stream = match clock {
        Some(stream) => stream,
        None => clock.insert(ClockStream::open(transport).await?),
    };
    stream.sample().await
}

/// Sets the guest's clock to the desktop's, `one_way` ahead (the time the
/// request takes to arrive).
pub async fn set(transport: &dyn VsockTransport, one_way: Duration) -> Result<(), ClockError> {
    let stream = transport
        .connect(VSOCK_PORT_CONTROL)
        .await
        .map_err(|e| ClockError::Set(GuestError::Connect(e)))?;
    let unix_nanos = unix_nanos(SystemTime::now() + one_way) as u64;
    let (response, _) = guest::call_on(stream, &ControlRequest::SetTime { unix_nanos })
        .await
        .map_err(ClockError::Set)?;
    if response.ok {
        Ok(())
    } else {
        Err(ClockError::Set(GuestError::Refused {
            op: "set_time",
            message: response.error.unwrap_or_default(),
        }))
    }
}

/// The running keeper; stops when dropped.
pub struct Keeper(JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts keeping the clock of VM `vm` in step, for as long as the
/// returned [`Keeper`] lives.
pub fn spawn(transport: Arc<dyn VsockTransport>, vm: String) -> Keeper {
    Keeper(tokio::spawn(keep(transport, vm, PERIOD, STEP)))
}

/// The keeper's loop (see the module doc); `period` and `step` are
/// [`PERIOD`] and [`STEP`] but in tests.
async fn keep(transport: Arc<dyn VsockTransport>, vm: String, period: Duration, step: Duration) {
    let mut sleep = SleepWatch::new();
    let mut slow_before = false;
    let mut clock = None;
    loop {
        let started = Instant::now();
        let asked = tokio::time::timeout(ASK_LIMIT, ask(transport.as_ref(), &mut clock)).await;
        if !matches!(asked, Ok(Ok(_))) {
            // Broken or silent: the next question opens a new connection.
            clock = None;
        }
        let wait = match asked {
            Ok(Ok(sample)) if sample.rtt > TRUSTED_RTT && !slow_before => {
                tracing::debug!(%vm, rtt_ms = sample.rtt.as_millis() as u64, "a slow answer from the guest (paused?): asking again");
                slow_before = true;
                Duration::ZERO
            }
            Ok(Ok(sample)) => {
                slow_before = sample.rtt > TRUSTED_RTT;
                if sample.off_by_more_than(step) {
                    match set(transport.as_ref(), sample.rtt / 2).await {
                        Ok(()) => {
                            tracing::info!(%vm, offset_ms = sample.offset_ms(), "guest clock stepped to the desktop's")
                        }
                        Err(e) => {
                            tracing::warn!(%vm, offset_ms = sample.offset_ms(), error = %crate::error_chain(&e), "cannot step the guest's clock")
                        }
                    }
                }
                period
            }
            // A question that hung (a paused VM; a transport that gave up
            // on it) is asked again at once; a quick failure waits.
            Ok(Err(e)) => {
                tracing::debug!(%vm, error = %crate::error_chain(&e), "cannot read the guest's clock");
                period.saturating_sub(started.elapsed())
            }
            Err(_) => {
                tracing::debug!(%vm, limit = ?ASK_LIMIT, "the guest did not say its time (paused?)");
                Duration::ZERO
            }
        };
        wait_or_wake(wait, &mut sleep, &vm).await;
    }
}

/// Waits `wait`, or less when the desktop wakes from sleep meanwhile.
async fn wait_or_wake(wait: Duration, sleep: &mut SleepWatch, vm: &str) {
    let deadline = Instant::now() + wait;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep((deadline - now).min(WAKE_CHECK)).await;
        if let Some(slept) = sleep.slept() {
            tracing::info!(%vm, slept_ms = slept.as_millis() as u64, "the desktop slept: looking at the guest's clock now");
            return;
        }
    }
}

/// Notices the desktop's sleep: the time it spent suspended, as the
/// difference of a clock that counts it and one that does not.
struct SleepWatch {
    suspended: Option<Duration>,
}

impl SleepWatch {
    fn new() -> Self {
        SleepWatch {
            suspended: suspended_total(),
        }
    }

    /// How long the desktop slept since the last call, if noticeably.
    fn slept(&mut self) -> Option<Duration> {
        let now = suspended_total()?;
        let before = self.suspended.replace(now)?;
        let slept = now.saturating_sub(before);
        (slept >= SLEEP_NOTICED).then_some(slept)
    }
}

/// The time the desktop spent suspended since it booted.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn suspended_total() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?);
    let awake = Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?);
    Some(boot.saturating_sub(awake))
}

/// The time the desktop spent suspended since it booted (macOS's
/// `CLOCK_MONOTONIC` counts sleep, `CLOCK_UPTIME_RAW` does not).
#[cfg(target_os = "macos")]
fn suspended_total() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let with_sleep = Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?);
    let awake = Duration::from(clock_gettime(ClockId::from_raw(libc::CLOCK_UPTIME_RAW)).ok()?);
    Some(with_sleep.saturating_sub(awake))
}

/// Elsewhere the periodic question alone notices a wake.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
fn suspended_total() -> Option<Duration> {
    None
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use vmctl_proto::control::ControlResponse;

    use crate::vsock::{ConnectFuture, VsockError};

    /// A guest whose clock is the desktop's plus an offset, and which can be
    /// paused: it then answers nothing, and its clock stands still.
    struct FakeGuest {
        clock: Mutex<FakeClock>,
        running: tokio::sync::watch::Sender<bool>,
        sets: AtomicUsize,
        connections: AtomicUsize,
    }

    struct FakeClock {
        offset_ns: i128,
        paused_at: Option<SystemTime>,
    }

    impl FakeGuest {
        fn new(offset: Duration, behind: bool) -> Arc<Self> {
            let offset_ns = offset.as_nanos() as i128;
            Arc::new(FakeGuest {
                clock: Mutex::new(FakeClock {
                    offset_ns: if behind { -offset_ns } else { offset_ns },
                    paused_at: None,
                }),
                running: tokio::sync::watch::channel(true).0,
                sets: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
            })
        }

        /// The guest's clock now, in unix nanoseconds.
        fn now(&self) -> i128 {
            let clock = self.clock.lock().unwrap();
            let at = clock.paused_at.unwrap_or_else(SystemTime::now);
            unix_nanos(at) as i128 + clock.offset_ns
        }

        fn offset(&self) -> Duration {
            let offset = self.now() - unix_nanos(SystemTime::now()) as i128;
            Duration::from_nanos(offset.unsigned_abs() as u64)
        }

        fn pause(&self) {
            self.clock.lock().unwrap().paused_at = Some(SystemTime::now());
            self.running.send_replace(false);
        }

        /// Resumes: the clock goes on from where it stood.
        fn resume(&self) {
            {
                let mut clock = self.clock.lock().unwrap();
                if let Some(at) = clock.paused_at.take() {
                    let stood = SystemTime::now().duration_since(at).unwrap_or_default();
                    clock.offset_ns -= stood.as_nanos() as i128;
                }
            }
            self.running.send_replace(true);
        }

        async fn serve(self: Arc<Self>, stream: tokio::io::DuplexStream) {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if vmctl_proto::line::read_line(&mut reader, &mut line)
                .await
                .is_err()
            {
                return;
            }
            let mut running = self.running.subscribe();
            let _ = running.wait_for(|running| *running).await;
            let request: ControlRequest = serde_json::from_str(&line).unwrap();
            if let ControlRequest::SetTime { unix_nanos } = request {
                self.sets.fetch_add(1, Ordering::SeqCst);
                self.clock.lock().unwrap().offset_ns =
                    unix_nanos as i128 - super::unix_nanos(SystemTime::now()) as i128;
            } else {
                assert_eq!(request, ControlRequest::Clock);
            }
            let mut answer = serde_json::to_vec(&ControlResponse::ok()).unwrap();
            answer.push(b'\n');
            if reader.get_mut().write_all(&answer).await.is_err()
                || request != ControlRequest::Clock
            {
                return;
            }
            loop {
                line.clear();
                match vmctl_proto::line::read_line(&mut reader, &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A paused guest answers at its resume.
                let _ = running.wait_for(|running| *running).await;
                let reading = ClockReading {
                    unix_nanos: self.now() as u64,
                };
                let mut out = serde_json::to_vec(&reading).unwrap();
                out.push(b'\n');
                if reader.get_mut().write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }

    struct FakeTransport(Arc<FakeGuest>);

    impl VsockTransport for FakeTransport {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn connect(&self, port: u32) -> ConnectFuture<'_> {
            let guest = self.0.clone();
            Box::pin(async move {
                if port != VSOCK_PORT_CONTROL {
                    return Err(VsockError::Refused { port });
                }
                guest.connections.fetch_add(1, Ordering::SeqCst);
                let (ours, theirs) = tokio::io::duplex(4096);
                tokio::spawn(guest.serve(theirs));
                Ok(Box::new(ours) as crate::vsock::GuestStream)
            })
        }
    }

    fn start(guest: &Arc<FakeGuest>, period: Duration) -> Keeper {
        let transport: Arc<dyn VsockTransport> = Arc::new(FakeTransport(guest.clone()));
        Keeper(tokio::spawn(keep(transport, "test".into(), period, STEP)))
    }

    /// Polls `check` every 10 ms for up to `limit`.
    async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check()
    }

    #[tokio::test]
    async fn a_sample_measures_the_offset() {
        let guest = FakeGuest::new(Duration::from_secs(7), true);
        let transport = FakeTransport(guest.clone());
        let mut clock = ClockStream::open(&transport).await.unwrap();
        let sample = clock.sample().await.unwrap();
        let again = clock.sample().await.unwrap();
        assert!(
            (again.offset_ns - sample.offset_ns).abs() < 500_000_000,
            "one connection, many questions"
        );
        let off = sample.offset_ns + 7_000_000_000;
        assert!(off.abs() < 500_000_000, "{sample:?}");
        assert!(sample.off_by_more_than(STEP));
        let close = Sample {
            offset_ns: -40_000_000,
            rtt: Duration::from_millis(1),
        };
        assert!(!close.off_by_more_than(STEP));
        let unsure = Sample {
            offset_ns: 400_000_000,
            rtt: Duration::from_secs(1),
        };
        assert!(
            !unsure.off_by_more_than(STEP),
            "within the round trip's doubt"
        );
    }

    #[tokio::test]
    async fn a_clock_behind_is_stepped_and_one_in_step_left_alone() {
        let guest = FakeGuest::new(Duration::ZERO, false);
        let _keeper = start(&guest, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(guest.sets.load(Ordering::SeqCst), 0, "no step when in step");
        guest.clock.lock().unwrap().offset_ns = -3_000_000_000;
        assert!(
            eventually(Duration::from_secs(10), || guest.offset() < STEP).await,
            "still off by {:?}",
            guest.offset()
        );
        assert!(guest.sets.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn a_paused_guest_is_in_step_right_after_the_resume() {
        let guest = FakeGuest::new(Duration::ZERO, false);
        // The real period: the question asked during the pause is answered
        // at the resume, long before the next period.
        let _keeper = start(&guest, PERIOD);
        tokio::time::sleep(Duration::from_millis(100)).await;
        guest.pause();
        tokio::time::sleep(PERIOD * 2).await;
        guest.resume();
        let resumed = Instant::now();
        assert!(guest.offset() > PERIOD, "the clock stood still");
        assert!(
            eventually(Duration::from_secs(10), || guest.offset() < STEP).await,
            "still off by {:?}",
            guest.offset()
        );
        eprintln!("in step {:?} after the resume", resumed.elapsed());
        assert_eq!(guest.sets.load(Ordering::SeqCst), 1, "one step");
        assert_eq!(
            guest.connections.load(Ordering::SeqCst),
            2,
            "one clock connection, one SetTime"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_desktop_clocks_are_read_and_no_sleep_is_seen_while_awake() {
        assert!(suspended_total().is_some());
        let mut watch = SleepWatch::new();
        assert_eq!(watch.slept(), None);
    }
}
