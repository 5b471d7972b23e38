//! `cargo bench`: how the pipeline's pure core compares with the floor (reading and hashing
//! the same files, which any tool must do) and with peers run in the same process (OpenSSH's
//! `ssh-keygen -Y verify` for a signature check). Prints ratios; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use homelab::approve::{AllowedSigners, SigningKey, PLAN_NAMESPACE};

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f(); // warm up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
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
}
