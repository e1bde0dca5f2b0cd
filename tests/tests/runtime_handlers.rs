//! Picking the runtime per host capability: crun 1.8 cannot run at all on
//! a hybrid-cgroup host whose cgroup2 hierarchy holds a controller (this
//! machine as it boots: hugetlb). There berth must default to runc, and a
//! pod that names crun must fail with the reason and the fix — never run
//! with its limits silently dropped.

mod runtime_common;

use std::collections::BTreeMap;

use berth::paths::Paths;
use berth::runtime::config::RuntimeConfig;
use berth::runtime::mountinfo;
use berth::runtime::{
    CgroupLayout, CgroupMode, CreateContainer, Runtime, RuntimeError, RuntimeKind,
};
use berth_e2e::{TestDirs, require_root, rootfs, shim_bin};
use runtime_common::{Harness, sh};

/// This host's mount table as it boots: every cgroup mount except a v1
/// hierarchy for a controller that cgroup2 holds by default (hugetlb here,
/// which the crun tests move to v1).
fn boot_time_layout() -> CgroupLayout {
    let mounts: Vec<_> = mountinfo::read()
        .expect("mountinfo")
        .into_iter()
        .filter(|m| !(m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == "hugetlb")))
        .collect();
    let layout = CgroupLayout::from_mounts(&mounts, |_| "hugetlb\n".into()).expect("layout");
    assert_eq!(
        layout.mode,
        CgroupMode::Hybrid,
        "this test describes a hybrid host"
    );
    layout
}

fn runtime_on_boot_layout(dirs: &TestDirs, default_handler: Option<&str>) -> Runtime {
    let config = RuntimeConfig {
        shim: Some(shim_bin()),
        default_handler: default_handler.map(str::to_string),
        ..Default::default()
    };
    Runtime::new(Paths::new(&dirs.root, &dirs.run_root), config)
        .expect("runtime")
        .with_cgroup_layout(boot_time_layout())
}

#[test]
fn crun_on_a_hybrid_host_fails_with_the_reason_and_the_fix() {
    require_root();
    let dirs = TestDirs::new();
    let runtime = runtime_on_boot_layout(&dirs, None);
    let crun = runtime
        .handlers()
        .find(|h| h.kind == RuntimeKind::Crun)
        .expect("crun is installed");
    let reason = runtime
        .unsupported_reason(crun)
        .expect("crun cannot run here");
    assert!(reason.contains("hugetlb"), "{reason}");

    // The default falls back to runc.
    let default = runtime.handler_for(None).expect("a default handler");
    assert_eq!(default.kind, RuntimeKind::Runc);

    // A pod that asks for crun gets the clear error, before anything is
    // created.
    let paths = Paths::new(&dirs.root, &dirs.run_root);
    let pod = berth::runtime::PodInfo {
        namespace: "default".into(),
        name: "p".into(),
        uid: "uid-crun".into(),
        hostname: "p".into(),
        ..Default::default()
    };
    let sandbox = berth::runtime::PodSandbox::at(&paths, &pod, None);
    let layers = rootfs::busybox_layers(&dirs.temp.path().join("layers"));
    let mut spec = sh("app", "true");
    spec.resources.memory_limit_bytes = Some(64 << 20);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let err = tokio
        .block_on(runtime.create_container(CreateContainer {
            id: "btcrunrefused",
            pod: &pod,
            sandbox: &sandbox,
            container: &spec,
            image: None,
            lowerdirs: &layers,
            volumes: &BTreeMap::new(),
            runtime_class: Some("crun"),
            log_path: dirs.temp.path().join("0.log"),
            labels: BTreeMap::new(),
        }))
        .map(|_| ())
        .expect_err("crun must be refused");
    let message = err.to_string();
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{message}");
    for needle in [
        "runtime handler crun (crun version 1.",
        "cannot run containers on this host",
        "hybrid",
        "hugetlb",
        "could not apply its resource limits",
        "run the pod with runc",
        "mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    assert!(
        !paths.shim_dir("btcrunrefused").exists(),
        "nothing was created"
    );
    assert!(!paths.bundle("btcrunrefused").exists());

    // Choosing crun as the default on such a host fails the same way.
    let runtime = runtime_on_boot_layout(&dirs, Some("crun"));
    let err = runtime.handler_for(None).map(|_| ()).expect_err("refused");
    assert!(err.to_string().contains("hugetlb"), "{err}");
}

#[test]
fn where_crun_can_work_it_is_the_default() {
    // Harness::new("crun") moves hugetlb to cgroup v1 first.
    let h = Harness::new("crun");
    let dirs = TestDirs::new();
    let config = RuntimeConfig {
        shim: Some(shim_bin()),
        ..Default::default()
    };
    let runtime = Runtime::new(Paths::new(&dirs.root, &dirs.run_root), config).expect("runtime");
    assert_eq!(runtime.layout().crun_blocker(), None);
    assert_eq!(
        runtime.handler_for(None).expect("default").kind,
        RuntimeKind::Crun
    );
    assert_eq!(
        runtime.handler_for(Some("runc")).expect("runc").kind,
        RuntimeKind::Runc
    );
    let err = runtime
        .handler_for(Some("kata"))
        .map(|_| ())
        .expect_err("unknown");
    assert!(
        err.to_string()
            .contains("runtimeClassName \"kata\" names no runtime handler"),
        "{err}"
    );
    drop(h);
}
