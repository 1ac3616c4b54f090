//! A run killed with SIGKILL in the middle resumes to the same store as an uninterrupted run.
//!
//! The test binary re-invokes itself: `child_writer` does the work when `CHILD_DIR_ENV` names a
//! store directory (and returns at once otherwise, as in a normal test run). The child runs a
//! Tree-of-Thought search over a deterministic scripted generator that sleeps on every call, so
//! the parent can kill it while batches are in flight.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BySeed, Table};
use pulserec_core::{GenerationRequest, TextGenerator, UserContext, UserId};
use pulserec_tot::{RationaleStore, Shard, StoredRationale, TotConfig, TreeOfThought};

const CHILD_DIR_ENV: &str = "PULSEREC_TOT_KILL_TEST_DIR";
const USERS: u32 = 16;
const BATCH: usize = 2;
const SEED: u64 = 5;

/// A generator that sleeps before answering, to stretch a run out.
struct Slow {
    inner: BySeed,
    delay: Duration,
}

impl TextGenerator for Slow {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<pulserec_core::Generation>> {
        std::thread::sleep(self.delay);
        self.inner.generate(requests)
    }
}

/// What the `rationales` example does, in miniature: search every pending user in batches and
/// append each batch's records as one part.
fn write_store(dir: &Path, delay: Duration) {
    let store = RationaleStore::open(dir).unwrap();
    let users: Vec<UserContext> = (0..USERS)
        .map(|u| UserContext {
            user: UserId(u),
            ..Default::default()
        })
        .collect();
    let pending = store
        .pending(users.iter().map(|c| c.user), Shard::ALL)
        .unwrap();
    let todo: Vec<UserContext> = users
        .into_iter()
        .filter(|c| pending.contains(&c.user))
        .collect();
    let generator = Slow {
        inner: BySeed::default(),
        delay,
    };
    let config = TotConfig {
        batch_size: BATCH,
        ..TotConfig::paper(SEED)
    };
    let mut tot = TreeOfThought::new(generator, Table::default(), config).unwrap();
    for batch in todo.chunks(BATCH) {
        let started = Instant::now();
        let trees = tot.search(batch).unwrap();
        let seconds = started.elapsed().as_secs_f64() / batch.len() as f64;
        let records: Vec<StoredRationale> = trees
            .iter()
            .map(|t| {
                StoredRationale::tree_of_thought(t, tot.scorer_name(), "by-seed", SEED, seconds)
            })
            .collect();
        store.append(&records, Shard::ALL).unwrap();
    }
}

#[test]
fn child_writer() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        write_store(Path::new(&dir), Duration::from_millis(60));
    }
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The store's records with the measured wall times cleared (the only field that may differ).
fn records_without_timing(dir: &Path) -> Vec<StoredRationale> {
    let mut records = RationaleStore::open(dir).unwrap().load().unwrap();
    records.iter_mut().for_each(|r| r.seconds = 0.0);
    records
}

#[test]
fn a_killed_run_resumes_to_the_same_store() {
    let full = tempfile::tempdir().unwrap();
    write_store(full.path(), Duration::ZERO);
    let want = records_without_timing(full.path());
    assert_eq!(want.len(), USERS as usize);
    assert!(want.iter().all(|r| r.score.is_some() && !r.text.is_empty()));

    let killed = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(killed.path()).unwrap();
    let mut child = spawn_child(killed.path());
    // Kill as soon as the first batch is stored: the child is then inside a later batch (each
    // takes `depth` sleeping generate calls), so the kill lands mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.done().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the child stored nothing in 120 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited before being killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was not killed: {status}");

    let survived = store.load().unwrap();
    assert!(
        !survived.is_empty() && survived.len() < USERS as usize,
        "killed after {} of {USERS} users: not mid-run",
        survived.len()
    );
    // Parts are atomic: only whole batches survive.
    assert_eq!(survived.len() % BATCH, 0, "a partial batch survived");

    // The rerun skips what survived and finishes the rest.
    let status = spawn_child(killed.path()).wait().unwrap();
    assert!(status.success(), "the resumed run failed: {status}");
    let got = records_without_timing(killed.path());
    assert_eq!(got, want);
    // Surviving records were kept, not redone: their timings are the killed run's.
    let after = store.load().unwrap();
    for r in &survived {
        assert_eq!(after.iter().find(|a| a.user == r.user), Some(r));
    }
}
