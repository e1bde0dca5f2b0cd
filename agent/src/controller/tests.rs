//! Controller behaviour under a paused tokio clock: every delay below is
//! virtual time, so the assertions are exact and the tests take no time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

/// What the fake reconciler does on the n-th call (0-based) for a key:
/// how long it works, and what it returns.
type Script = dyn Fn(&str, usize) -> (Duration, Result<Action, String>) + Send + Sync;

#[derive(Default)]
struct Log {
    /// (key, start time since the test began)
    starts: Vec<(String, Duration)>,
    in_flight: HashMap<String, usize>,
    in_flight_total: usize,
    max_in_flight_one_key: usize,
    max_in_flight_total: usize,
}

struct Fake {
    script: Box<Script>,
    relist: Mutex<Vec<String>>,
    log: Mutex<Log>,
    finished: watch::Sender<usize>,
    /// (calls finished, reconciles in flight) at each `idle` call.
    idles: Mutex<Vec<(usize, usize)>>,
    epoch: Instant,
}

impl Fake {
    fn new(
        script: impl Fn(&str, usize) -> (Duration, Result<Action, String>) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            relist: Mutex::new(Vec::new()),
            log: Mutex::new(Log::default()),
            finished: watch::Sender::new(0),
            idles: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        })
    }

    fn with_relist(self: Arc<Self>, keys: &[&str]) -> Arc<Self> {
        *self.relist.lock().expect("lock") = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    fn starts_of(&self, key: &str) -> Vec<Duration> {
        let log = self.log.lock().expect("lock");
        log.starts
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, at)| *at)
            .collect()
    }

    fn calls(&self) -> usize {
        self.log.lock().expect("lock").starts.len()
    }

    async fn wait_finished(&self, count: usize) {
        self.finished
            .subscribe()
            .wait_for(|n| *n >= count)
            .await
            .expect("fake reconciler alive");
    }
}

impl Reconciler for Fake {
    type Key = String;
    type Error = std::io::Error;

    async fn reconcile(&self, key: &String, _why: &Why) -> Result<Action, std::io::Error> {
        let (work, result) = {
            let mut log = self.log.lock().expect("lock");
            let nth = log.starts.iter().filter(|(k, _)| k == key).count();
            log.starts.push((key.clone(), self.epoch.elapsed()));
            let mine = log.in_flight.entry(key.clone()).or_default();
            *mine += 1;
            let mine = *mine;
            log.in_flight_total += 1;
            log.max_in_flight_one_key = log.max_in_flight_one_key.max(mine);
            log.max_in_flight_total = log.max_in_flight_total.max(log.in_flight_total);
            (self.script)(key, nth)
        };
        tokio::time::sleep(work).await;
        if key == "panics" {
            panic!("a reconciler bug");
        }
        {
            let mut log = self.log.lock().expect("lock");
            *log.in_flight.entry(key.clone()).or_default() -= 1;
            log.in_flight_total -= 1;
        }
        self.finished.send_modify(|n| *n += 1);
        result.map_err(std::io::Error::other)
    }

    async fn relist(&self) -> Vec<String> {
        self.relist.lock().expect("lock").clone()
    }

    fn idle(&self) {
        let in_flight = self.log.lock().expect("lock").in_flight_total;
        self.idles
            .lock()
            .expect("lock")
            .push((*self.finished.borrow(), in_flight));
    }
}

struct Running {
    triggers: mpsc::UnboundedSender<(String, Why)>,
    shutdown: CancellationToken,
    ready: Option<oneshot::Receiver<()>>,
    handle: JoinHandle<()>,
}

impl Running {
    fn trigger(&self, key: &str) {
        self.triggers
            .unbounded_send((key.to_owned(), Why::Changed))
            .expect("controller alive");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("controller task");
    }
}

fn config(workers: usize) -> ControllerConfig {
    ControllerConfig {
        workers,
        relist_interval: Duration::from_secs(3600),
        shutdown_timeout: Duration::from_secs(10),
        backoff: BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        },
    }
}

fn start(fake: &Arc<Fake>, config: ControllerConfig) -> Running {
    let (triggers, rx) = mpsc::unbounded();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let controller = Controller::new(Arc::clone(fake), config);
    let handle = tokio::spawn(controller.run(rx, shutdown.clone(), ready_tx));
    Running {
        triggers,
        shutdown,
        ready: Some(ready_rx),
        handle,
    }
}

fn quick(action: Action) -> impl Fn(&str, usize) -> (Duration, Result<Action, String>) {
    move |_, _| (Duration::ZERO, Ok(action))
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_triggers_for_one_key_runs_it_once() {
    let fake = Fake::new(quick(Action::await_change()));
    let running = start(&fake, config(4));
    for _ in 0..5 {
        running.trigger("a");
    }
    running.trigger("b");
    fake.wait_finished(2).await;
    // Give any wrongly queued extra run every chance to happen.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.starts_of("a").len(), 1);
    assert_eq!(fake.starts_of("b").len(), 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_key_triggered_while_running_runs_once_more_after_never_concurrently() {
    let fake = Fake::new(|_, _| (Duration::from_secs(10), Ok(Action::await_change())));
    let running = start(&fake, config(4));
    running.trigger("a");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.trigger("a");
    }
    fake.wait_finished(2).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        fake.starts_of("a"),
        [Duration::ZERO, Duration::from_secs(10)],
        "one run, then exactly one more after it ended"
    );
    assert_eq!(fake.log.lock().expect("lock").max_in_flight_one_key, 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_is_called_once_a_burst_of_reconciles_is_over() {
    let fake = Fake::new(|key, _| {
        let work = if key == "slow" { 5 } else { 1 };
        (Duration::from_secs(work), Ok(Action::await_change()))
    });
    let running = start(&fake, config(4));
    running.trigger("fast");
    running.trigger("slow");
    fake.wait_finished(2).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        *fake.idles.lock().expect("lock"),
        [(2, 0)],
        "not while `slow` still runs; once, when both are done"
    );
    running.trigger("fast");
    fake.wait_finished(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.idles.lock().expect("lock").len(), 2);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_by_workers() {
    let fake = Fake::new(|_, _| (Duration::from_secs(1), Ok(Action::await_change())))
        .with_relist(&["a", "b", "c", "d", "e", "f"]);
    let running = start(&fake, config(2));
    fake.wait_finished(6).await;
    let (max_in_flight, mut times) = {
        let log = fake.log.lock().expect("lock");
        let times: Vec<Duration> = log.starts.iter().map(|(_, at)| *at).collect();
        (log.max_in_flight_total, times)
    };
    assert_eq!(max_in_flight, 2);
    times.sort();
    assert_eq!(
        times,
        [0, 0, 1, 1, 2, 2].map(Duration::from_secs),
        "two at a time, each starting as soon as a worker frees up"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn requeue_runs_the_key_again_after_the_delay() {
    let fake = Fake::new(quick(Action::requeue(Duration::from_secs(30)))).with_relist(&["a"]);
    let running = start(&fake, config(4));
    fake.wait_finished(3).await;
    assert_eq!(fake.starts_of("a"), [0, 30, 60].map(Duration::from_secs));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trigger_brings_a_requeued_key_forward() {
    let fake = Fake::new(quick(Action::requeue(Duration::from_secs(30)))).with_relist(&["a"]);
    let running = start(&fake, config(4));
    fake.wait_finished(1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.trigger("a");
    fake.wait_finished(3).await;
    assert_eq!(fake.starts_of("a"), [0, 5, 35].map(Duration::from_secs));
    running.stop().await;
}

/// Gaps between consecutive starts of `a`.
fn gaps(starts: &[Duration]) -> Vec<Duration> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_exponentially_with_jitter_up_to_the_cap_and_reset_on_success() {
    // Calls 0-5 fail, 6 succeeds, 7 fails again, 8 succeeds.
    let fake = Fake::new(|_, n| {
        let result = if n < 6 || n == 7 {
            Err(format!("failure {n}"))
        } else {
            Ok(Action::await_change())
        };
        (Duration::ZERO, result)
    })
    .with_relist(&["a"]);
    let running = start(&fake, config(4));
    fake.wait_finished(7).await;
    let starts = fake.starts_of("a");
    let nominal = [1, 2, 4, 8, 8, 8].map(Duration::from_secs);
    for (gap, nominal) in gaps(&starts).iter().zip(nominal) {
        assert!(
            *gap >= nominal / 2 && *gap <= nominal,
            "gap {gap:?} outside [{:?}, {nominal:?}]; all starts {starts:?}",
            nominal / 2
        );
    }
    assert_eq!(starts.len(), 7, "no run after the success: {starts:?}");

    // A new failure after a success starts from the initial delay again.
    running.trigger("a");
    fake.wait_finished(9).await;
    let starts = fake.starts_of("a");
    let reset_gap = starts[8] - starts[7];
    assert!(
        reset_gap >= Duration::from_millis(500) && reset_gap <= Duration::from_secs(1),
        "backoff did not reset: {reset_gap:?}"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_is_retried_with_backoff_and_others_keep_running() {
    let fake = Fake::new(quick(Action::await_change())).with_relist(&["panics", "fine"]);
    let running = start(&fake, config(4));
    fake.wait_finished(1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let retries = fake.starts_of("panics");
    assert!(retries.len() >= 3, "panicking key retried: {retries:?}");
    assert!(retries[1] - retries[0] >= Duration::from_millis(500));
    assert_eq!(fake.starts_of("fine").len(), 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn periodic_relist_reconciles_every_key_again() {
    let fake = Fake::new(quick(Action::await_change())).with_relist(&["a", "b"]);
    let running = start(
        &fake,
        ControllerConfig {
            relist_interval: Duration::from_secs(60),
            ..config(4)
        },
    );
    fake.wait_finished(6).await;
    assert_eq!(fake.starts_of("a"), [0, 60, 120].map(Duration::from_secs));
    assert_eq!(fake.starts_of("b"), [0, 60, 120].map(Duration::from_secs));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn initial_sync_fires_after_every_relisted_key_ran_once_even_if_it_failed() {
    let fake = Fake::new(|key, _| match key {
        "slow" => (Duration::from_secs(5), Ok(Action::await_change())),
        _ => (Duration::ZERO, Err("broken".to_owned())),
    })
    .with_relist(&["slow", "failing"]);
    let epoch = Instant::now();
    let mut running = start(&fake, config(4));
    running
        .ready
        .take()
        .expect("ready receiver")
        .await
        .expect("initial sync signalled");
    assert_eq!(epoch.elapsed(), Duration::from_secs(5));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn initial_sync_fires_at_once_with_nothing_to_do() {
    let fake = Fake::new(quick(Action::await_change()));
    let epoch = Instant::now();
    let mut running = start(&fake, config(4));
    running
        .ready
        .take()
        .expect("ready receiver")
        .await
        .expect("initial sync signalled");
    assert_eq!(epoch.elapsed(), Duration::ZERO);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_reconciles_finish_and_starts_nothing_new() {
    let fake =
        Fake::new(|_, _| (Duration::from_secs(5), Ok(Action::await_change()))).with_relist(&["a"]);
    let epoch = Instant::now();
    let running = start(&fake, config(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.trigger("b");
    running.stop().await;
    assert_eq!(
        epoch.elapsed(),
        Duration::from_secs(5),
        "waited for the running reconcile"
    );
    assert_eq!(
        *fake.finished.borrow(),
        1,
        "the running reconcile completed"
    );
    assert_eq!(
        fake.calls(),
        1,
        "the queued key was not started after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_reconciles_that_outlive_the_bound() {
    let fake = Fake::new(|_, _| (Duration::from_secs(100), Ok(Action::await_change())))
        .with_relist(&["a"]);
    let epoch = Instant::now();
    let running = start(&fake, config(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    assert_eq!(
        epoch.elapsed(),
        Duration::from_secs(11),
        "1 s running + the 10 s bound"
    );
    assert_eq!(
        *fake.finished.borrow(),
        0,
        "the reconcile was cancelled, not completed"
    );
}
