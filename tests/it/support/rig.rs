//! The fake cluster that the Pub/Sub push and pull tests start from:
//! Deployments of one container each, the index file naming them, and the
//! kubeconfig of deploy/'s serve ServiceAccount.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

use crate::support::cluster::{Cluster, workload};

pub struct FakeRig {
    pub c: Cluster,
    pub fake: FakeApiServer,
    pub kubeconfig: PathBuf,
    index: tempfile::TempDir,
}

impl FakeRig {
    /// One Deployment per `(namespace, name, image)`, its one container
    /// named `container`, and an index that lists them.
    pub async fn new(container: &str, workloads: &[(&str, &str, String)]) -> FakeRig {
        let c = Cluster::fake().await;
        let fake = c.fake_server().unwrap().clone();
        let mut images: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (ns, name, image) in workloads {
            c.create(workload(
                "Deployment",
                ns,
                name,
                &[(container, image)],
                &[],
                json!({}),
            ))
            .await;
            images.entry(image).or_default().push(json!({
                "kind": "Deployment", "namespace": ns, "name": name, "containers": [container]
            }));
        }
        let index = tempfile::tempdir().unwrap();
        let doc = json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": images});
        std::fs::write(index.path().join("index.json"), doc.to_string()).unwrap();
        let kubeconfig = c.serve_identity().await;
        FakeRig {
            c,
            fake,
            kubeconfig,
            index,
        }
    }

    /// The index file, for `--index-file`.
    pub fn index_file(&self) -> PathBuf {
        self.index.path().join("index.json")
    }
}
