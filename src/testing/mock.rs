//! A mock [`Service`] with canned answers, and a server running it on a temporary socket.

use crate::api::{RunningServer, Server, ServerOptions};
use crate::service::{JobView, MethodResult, RelationshipView, Service, StorageObjectView};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Records every call as `Method(args)` and answers from a fixed script:
/// - AttachReplica: CopyType 0, 1, 6-32767 -> 5; 32768+ -> 1; source = target -> 5;
///   a source containing "busy" -> 6; "slow" -> 4096 job-slow (Completed on the 3rd GetJob);
///   "fail" -> 4096 job-fail (Exception on the 2nd GetJob); CopyType 4 -> 0; else 4096 job-1.
/// - jobs: job-1 (Running 42%), job-done (Completed), job-bad (Exception).
/// - ModifySynchronization (recorded with its Force): unknown relationship -> 5,
///   Restore (5) -> 1, else 0.
/// - AdoptStorageObject: "block/busy" -> 6, "block/panic" panics, else 0.
#[derive(Default)]
pub struct Mock {
    pub calls: Mutex<Vec<String>>,
    polls: Mutex<HashMap<String, u32>>,
}

fn rv(return_value: u32, job: Option<&str>, rel: Option<&str>, desc: Option<&str>) -> MethodResult {
    MethodResult {
        return_value,
        job: job.map(str::to_string),
        relationship: rel.map(str::to_string),
        description: desc.map(str::to_string),
    }
}

pub fn job(id: &str, state: u16, name: &str, pct: u16, error: Option<&str>) -> JobView {
    JobView {
        instance_id: id.into(),
        name: format!("copy for {id}"),
        job_state: state,
        job_state_name: name.into(),
        percent_complete: pct,
        time_submitted: 1_700_000_000,
        start_time: Some(1_700_000_001),
        elapsed_time: 12.5,
        error_code: if error.is_some() { 4 } else { 0 },
        error_description: error.map(str::to_string),
        delete_on_completion: true,
        time_before_removal: 300,
        source: "/backstores/block/src".into(),
        target: "/backstores/block/dst".into(),
        copy_type: 3,
        relationship: Some("rel-1".into()),
    }
}

pub const BAD_JOB_ERROR: &str = "kernel refused load on lr1-x: Device or resource busy";
pub const FAIL_JOB_ERROR: &str = "copy failed: read error on /dev/sdb at sector 2048";

impl Mock {
    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn poll(&self, id: &str) -> u32 {
        let mut p = self.polls.lock().unwrap();
        let n = p.entry(id.to_string()).or_default();
        *n += 1;
        *n
    }
}

impl Service for Mock {
    fn attach_replica(&self, source: &str, target: &str, copy_type: u16) -> MethodResult {
        self.record(format!("AttachReplica({source},{target},{copy_type})"));
        match copy_type {
            0 | 1 | 6..=32767 => {
                return rv(
                    5,
                    None,
                    None,
                    Some(&format!("invalid parameter: CopyType {copy_type}")),
                )
            }
            32768.. => return rv(1, None, None, Some("not supported: vendor CopyType")),
            _ => {}
        }
        if source == target {
            rv(
                5,
                None,
                None,
                Some("invalid parameter: source and target are the same"),
            )
        } else if source.contains("busy") {
            rv(
                6,
                None,
                None,
                Some("in use: block/busy is already in relationship rel-9"),
            )
        } else if source.contains("slow") {
            rv(4096, Some("job-slow"), Some("rel-2"), None)
        } else if source.contains("fail") {
            rv(4096, Some("job-fail"), Some("rel-3"), None)
        } else if copy_type == 4 {
            rv(0, None, Some("rel-snap"), None)
        } else {
            rv(4096, Some("job-1"), Some("rel-1"), None)
        }
    }

    fn modify_synchronization(
        &self,
        relationship: &str,
        operation: u16,
        force: bool,
    ) -> MethodResult {
        self.record(format!(
            "ModifySynchronization({relationship},{operation},{force})"
        ));
        if !relationship.starts_with("rel-") {
            rv(5, None, None, Some("not found: no such relationship"))
        } else if operation == 5 {
            rv(
                1,
                None,
                Some(relationship),
                Some("not supported: Restore of a Sync mirror"),
            )
        } else {
            rv(0, None, Some(relationship), None)
        }
    }

    fn jobs(&self) -> Vec<JobView> {
        self.record("EnumerateJobs".into());
        vec![
            job("job-1", 4, "Running", 42, None),
            job("job-done", 7, "Completed", 100, None),
            job("job-bad", 10, "Exception", 13, Some(BAD_JOB_ERROR)),
        ]
    }

    fn job(&self, id: &str) -> Option<JobView> {
        self.record(format!("GetJob({id})"));
        match id {
            "job-slow" => Some(match self.poll(id) {
                n @ 1..=2 => job(id, 4, "Running", n as u16 * 30, None),
                _ => job(id, 7, "Completed", 100, None),
            }),
            "job-fail" => Some(match self.poll(id) {
                1 => job(id, 4, "Running", 10, None),
                _ => job(id, 10, "Exception", 10, Some(FAIL_JOB_ERROR)),
            }),
            _ => self.jobs().into_iter().find(|j| j.instance_id == id),
        }
    }

    fn request_state_change(&self, id: &str, requested_state: u16) -> MethodResult {
        self.record(format!("RequestStateChange({id},{requested_state})"));
        if id != "job-1" {
            rv(5, None, None, Some("invalid parameter: no such job"))
        } else {
            rv(0, None, None, None)
        }
    }

    fn get_error(&self, id: &str) -> Option<Option<String>> {
        self.record(format!("GetError({id})"));
        match id {
            "job-bad" => Some(Some(BAD_JOB_ERROR.into())),
            "job-1" | "job-done" => Some(None),
            _ => None,
        }
    }

    fn relationships(&self) -> crate::Result<Vec<RelationshipView>> {
        self.record("EnumerateRelationships".into());
        Ok(vec![RelationshipView {
            instance_id: "rel-1".into(),
            system_element: "/backstores/block/src".into(),
            synced_element: "/backstores/block/dst".into(),
            copy_type: 2,
            sync_state: 6,
            sync_state_name: "Synchronized".into(),
            sync_maintained: true,
            percent_synced: 100,
            when_synced: Some(1_700_000_100),
            progress_status: None,
            cow_used_sectors: None,
            cow_total_sectors: None,
            max_lag_writes: Some(256),
            change_tracking: true,
        }])
    }

    fn storage_objects(&self) -> crate::Result<Vec<StorageObjectView>> {
        self.record("EnumerateStorageObjects".into());
        Ok(vec![StorageObjectView {
            element: "/backstores/block/src".into(),
            plugin: "block".into(),
            name: "src".into(),
            hba: "iblock_0".into(),
            device: Some("/dev/mapper/lr1-src".into()),
            size_bytes: Some(1 << 30),
            block_size: Some(512),
            wwn: Some("6001405abcdef".into()),
            enabled: true,
            readonly: false,
            exported_by: vec!["iscsi/iqn.2003-01.org.example:t/tpgt_1/lun_0".into()],
            adopted: true,
            relationship: Some("rel-1".into()),
        }])
    }

    fn adopt(&self, element: &str) -> MethodResult {
        self.record(format!("AdoptStorageObject({element})"));
        match element {
            "block/busy" => rv(
                6,
                None,
                None,
                Some("in use: exported through a LUN that is busy"),
            ),
            "block/panic" => panic!("mock engine exploded"),
            _ => rv(0, None, None, None),
        }
    }
}

/// A mock server on a fresh temporary socket; stopped (and the socket removed) on drop.
pub struct TestServer {
    pub mock: Arc<Mock>,
    pub socket: PathBuf,
    pub server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> TestServer {
        let dir = tempfile::Builder::new().prefix("lr").tempdir().unwrap();
        // A directory that does not exist yet: the server makes it (0700).
        let socket = dir.path().join("run").join("api.sock");
        let mock = Arc::new(Mock::default());
        let server = Server::bind(&socket, mock.clone())
            .unwrap()
            .with_options(opts)
            .spawn();
        TestServer {
            mock,
            socket,
            server: Some(server),
            _dir: dir,
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
