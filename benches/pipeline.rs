//! `cargo bench`: how the pipeline's pure core compares with the floor (reading and hashing
//! the same files, which any tool must do) and with peers run in the same process (OpenSSH's
//! `ssh-keygen -Y verify` for a signature check), on this repository's own homelab and on
//! generated homelabs of 1,000 and 10,000 services. Prints ratios and whether the local-core
//! targets of issue 10 are met (own homelab ≤ 50 ms, 1,000 services ≤ 1 s, 10,000 ≤ 10× the
//! 1,000 time); asserts nothing, as a timing depends on the machine and what else runs on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use homelab::approve::{AllowedSigners, SigningKey, PLAN_NAMESPACE};

/// The CPU time this process has used (every thread, user and system): unlike the wall clock,
/// it does not grow while other programs hold the cores, so printed beside a wall time it shows
/// how much of that time was waiting for them.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The 1-minute load average, to say how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Wall and CPU time of one run of `f`.
fn timed(f: impl FnOnce()) -> (Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    f();
    (wall.elapsed(), cpu_time() - cpu)
}

fn middle(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f(); // warm up
    middle((0..runs).map(|_| timed(&mut f).0).collect())
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Writes a homelab of `services` services, 100 per node, each with the five files, a compose
/// template and a dependency on the first service of its node: the shape of a big real one.
fn generate(dir: &Path, services: usize) {
    let nodes = services.div_ceil(100);
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let mut topo = String::from(
        "mesh: tailscale\nruntime_root: /opt/homelab\nsites:\n  home:\n    uplink: fiber\n    offline_first: false\nnodes:\n",
    );
    for n in 0..nodes {
        topo.push_str(&format!(
            "  node-{n}:\n    display_name: NODE-{n}\n    roles: [edge]\n    site: home\n    ssh:\n      address: 10.0.{}.{}\n",
            n / 250,
            n % 250 + 1
        ));
    }
    w("inventory/topology.yaml", &topo);
    w(
        "inventory/policy.yaml",
        "plan_ttl: 24h\napprovals:\n  default:\n    required: 1\n    approvers: [owner@bench]\n",
    );
    w("inventory/allowed_signers", "owner@bench ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzrJ4nJqpV3bY4l1ZxH0Zm0xq4u9y6uN5pU8J1c2d3e\n");
    for n in 0..nodes {
        let mut listed = format!("node: node-{n}\nservices:\n");
        let first = format!("svc-{n}-0");
        for s in 0..100.min(services - n * 100) {
            let name = format!("svc-{n}-{s}");
            listed.push_str(&format!("  - name: {name}\n    exposure: internal\n"));
            let deps = if s == 0 { "[]".to_owned() } else { format!("\n  - service: {first}") };
            w(&format!("services/{name}/service.yaml"), &format!(
                "name: {name}\ndescription: generated\nowner_node: node-{n}\nexposure: internal\ndependencies: {deps}\nhealthcheck:\n  interval: 30s\n  timeout: 5s\n  retries: 3\nruntime:\n  env_vars: []\nrequires: [docker]\nvars:\n  image: busybox:1\n"
            ));
            w(&format!("services/{name}/docker-compose.yml"), &format!(
                "services:\n  {name}:\n    image: \"{{{{ vars.image }}}}\"\n    container_name: {name}\n    restart: unless-stopped\n    command: [\"sleep\", \"86400\"]\n    labels:\n      homelab.node: \"{{{{ node.id }}}}\"\n"
            ));
            w(&format!("services/{name}/healthcheck.sh"), "#!/bin/sh\nexit 0\n");
            w(&format!("services/{name}/README.md"), "generated\n");
            w(&format!("services/{name}/env.example"), "# no settings\n");
        }
        w(&format!("hosts/node-{n}/services.yaml"), &listed);
        w(
            &format!("hosts/node-{n}/capabilities.yaml"),
            &format!("node: node-{n}\narch: x86_64\ncpu:\n  cores: 2\nmemory_mb: 2048\ngpu: null\ndevices: []\ndocker:\n  engine: \"20.10\"\n  compose: v2\ncapabilities: [docker, compose-v2]\n"),
        );
    }
}

/// Validate + render + diff against empty nodes (what `plan` computes without the network).
fn core(repo: &Path) -> usize {
    let lab = homelab::check::homelab(repo).unwrap_or_else(|d| panic!("{}", d[0]));
    let graph = homelab::graph::DeployGraph::build(&lab).unwrap();
    let rendered = homelab::render::render_all(&lab, |_| true).unwrap();
    let actual: Vec<homelab::observe::ActualNode> = lab
        .nodes
        .keys()
        .map(|n| homelab::observe::ActualNode {
            node: n.clone(),
            status: homelab::observe::NodeStatus::Reachable(Default::default()),
        })
        .collect();
    let header = homelab::plan::Header {
        created: "2026-01-01T00:00:00Z".into(),
        expires: "2026-01-02T00:00:00Z".into(),
        planner: "bench".into(),
        commit: "none".into(),
        dirty: true,
    };
    let plan = homelab::plan::diff(&lab, &graph, &rendered, &actual, header);
    plan.count(homelab::plan::Action::Create)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for d in ["inventory", "hosts", "services", "templates"] {
        files(&repo.join(d), &mut all);
    }
    let floor = median(
        || {
            for p in &all {
                let b = std::fs::read(p).unwrap();
                std::hint::black_box(homelab::digest::sha256_hex(&b));
            }
        },
        50,
    );
    let load = median(|| drop(std::hint::black_box(homelab::check::homelab(&repo).unwrap())), 20);
    let lab = homelab::check::homelab(&repo).unwrap();
    let render = median(
        || drop(std::hint::black_box(homelab::render::render_all(&lab, |_| true).unwrap())),
        20,
    );
    let graph = median(
        || drop(std::hint::black_box(homelab::graph::DeployGraph::build(&lab).unwrap().order())),
        50,
    );

    // Signing and verifying a plan-sized message: ours in process, and OpenSSH's ssh-keygen.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success(), "ssh-keygen is needed for the peer measurement");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers_text = format!(
        "bench namespaces=\"homelab-plan\" {}",
        public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );
    std::fs::write(dir.path().join("allowed_signers"), &signers_text).unwrap();
    let message = vec![b'x'; 64 * 1024];
    std::fs::write(dir.path().join("msg"), &message).unwrap();
    let signing = SigningKey::load(&key, None).unwrap();
    let sig = signing.sign(PLAN_NAMESPACE, &message).unwrap();
    std::fs::write(dir.path().join("msg.sig"), &sig).unwrap();
    let signers = AllowedSigners::parse(&signers_text, "allowed_signers").unwrap();
    let ours = median(
        || {
            drop(
                signers
                    .verify(PLAN_NAMESPACE, &message, &sig, std::time::SystemTime::now())
                    .unwrap(),
            )
        },
        50,
    );
    let peer = median(
        || {
            let st = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", PLAN_NAMESPACE, "-I", "bench", "-f"])
                .arg(dir.path().join("allowed_signers"))
                .arg("-s")
                .arg(dir.path().join("msg.sig"))
                .stdin(std::fs::File::open(dir.path().join("msg")).unwrap())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        },
        20,
    );

    // The local core at scale: the owner's homelab, and generated ones of 1,000 and 10,000
    // services, each against its own floor (reading and hashing its files). The two sizes run
    // interleaved, round by round, so a burst of other work on the machine lands on both
    // rather than on one and skews their ratio.
    let load_before = load_average();
    let own = median(
        || {
            std::hint::black_box(core(&repo));
        },
        10,
    );
    let sizes = [1_000, 10_000];
    let trees: Vec<(tempfile::TempDir, Vec<PathBuf>)> = sizes
        .iter()
        .map(|&n| {
            let dir = tempfile::tempdir().unwrap();
            generate(dir.path(), n);
            let mut gen_files = Vec::new();
            files(dir.path(), &mut gen_files);
            // Also the warm-up: the first run pulls the tree into the page cache.
            assert_eq!(core(dir.path()), n, "every generated service is planned");
            (dir, gen_files)
        })
        .collect();
    const ROUNDS: usize = 5;
    let mut runs: Vec<Scaled> = Vec::new();
    for (n, (_, gen_files)) in sizes.iter().zip(&trees) {
        runs.push(Scaled { services: *n, files: gen_files.len(), ..Scaled::default() });
    }
    for _ in 0..ROUNDS {
        for (run, (dir, gen_files)) in runs.iter_mut().zip(&trees) {
            let (floor, _) = timed(|| {
                for p in gen_files {
                    let b = std::fs::read(p).unwrap();
                    std::hint::black_box(homelab::digest::sha256_hex(&b));
                }
            });
            let (wall, cpu) = timed(|| {
                std::hint::black_box(core(dir.path()));
            });
            run.floor.push(floor);
            run.wall.push(wall);
            run.cpu.push(cpu);
        }
    }
    let load_after = load_average();

    let ratio = |d: Duration, base: Duration| d.as_secs_f64() / base.as_secs_f64();
    println!("homelab pipeline on this repository ({} files)", all.len());
    println!("{:<44} {:>12} {:>10}", "step", "median", "× floor");
    println!("{:<44} {:>12?} {:>10.1}", "floor: read + sha256 every file", floor, 1.0);
    println!(
        "{:<44} {:>12?} {:>10.1}",
        "load + validate (YAML, rules, render check)",
        load,
        ratio(load, floor)
    );
    println!("{:<44} {:>12?} {:>10.1}", "render every instance", render, ratio(render, floor));
    println!("{:<44} {:>12?} {:>10.1}", "graph + deployment order", graph, ratio(graph, floor));
    println!();
    println!("{:<44} {:>12} {:>10}", "verify a 64 KiB plan signature", "median", "× peer");
    println!("{:<44} {:>12?} {:>10.2}", "homelab (in process)", ours, ratio(ours, peer));
    println!("{:<44} {:>12?} {:>10.2}", "peer: ssh-keygen -Y verify (process)", peer, 1.0);
    println!();
    println!(
        "validate + render + diff (plan, no network); {ROUNDS} interleaved rounds; load average {load_before} before, {load_after} after"
    );
    println!("{:<44} {:>12} {:>12} {:>10}", "homelab", "median wall", "median CPU", "× floor");
    println!(
        "{:<44} {:>12?} {:>12} {:>10.1}",
        "this repository's homelab",
        own,
        "",
        ratio(own, floor)
    );
    for run in &runs {
        let (wall, cpu, floor) =
            (middle(run.wall.clone()), middle(run.cpu.clone()), middle(run.floor.clone()));
        println!(
            "{:<44} {:>12?} {:>12?} {:>10.1}",
            format!("generated: {} services ({} files)", run.services, run.files),
            wall,
            cpu,
            ratio(wall, floor)
        );
    }
    let (small, big) = (&runs[0], &runs[1]);
    let scale_wall = ratio(middle(big.wall.clone()), middle(small.wall.clone()));
    let scale_cpu = ratio(middle(big.cpu.clone()), middle(small.cpu.clone()));
    let scale_floor = ratio(middle(big.floor.clone()), middle(small.floor.clone()));
    println!(
        "{:<44} {:>11.1}× {:>11.1}× {:>10}",
        "10,000 vs 1,000 services",
        scale_wall,
        scale_cpu,
        format!("(floor {scale_floor:.1}×)")
    );
    println!();
    println!("targets (issue 10, local core; judged on the median wall time)");
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let small_wall = middle(small.wall.clone());
    println!(
        "  {:<40} {:>12} {}",
        "own homelab ≤ 50 ms",
        format!("{own:.1?}"),
        verdict(own <= Duration::from_millis(50))
    );
    println!(
        "  {:<40} {:>12} {}",
        "1,000 services ≤ 1 s",
        format!("{small_wall:.1?}"),
        verdict(small_wall <= Duration::from_secs(1))
    );
    println!(
        "  {:<40} {:>12} {}",
        "10,000 services ≤ 10× the 1,000 time",
        format!("{scale_wall:.1}×"),
        verdict(scale_wall <= 10.0)
    );
    // The same in CPU time: what the program itself costs, whatever else held the cores. When
    // the two disagree, the machine was busy (see the load average and the floor's own ratio).
    println!(
        "  {:<40} {:>12} {}",
        "  the same in CPU time",
        format!("{scale_cpu:.1}×"),
        verdict(scale_cpu <= 10.0)
    );
}

/// The times of one generated homelab, one entry per round.
#[derive(Default)]
struct Scaled {
    services: usize,
    files: usize,
    floor: Vec<Duration>,
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}
