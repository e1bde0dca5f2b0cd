//! Parsing never panics, whatever the bytes: mutated real manifests and
//! hosts.toml files (flipped bytes, truncations, YAML punctuation spliced in)
//! must always come back as diagnostics.

use std::path::{Path, PathBuf};

/// xorshift64*: deterministic, so a failure reproduces from its iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).expect("usize fits u64"))
            .expect("below n")
    }
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "examples",
        "tests/fixtures/manifests/good",
        "tests/fixtures/manifests/bad",
    ] {
        collect(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .filter(|p| !p.ends_with("expected.txt"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("reading a seed");
            (p, bytes)
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("listing seeds") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

const SPLICES: [&[u8]; 16] = [
    b"\n---\n",
    b"...",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"- ",
    b"\t",
    b"\"",
    b"'",
    b"!!binary ",
    b"\xff",
];

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(at),
            2 => {
                let splice = SPLICES[rng.below(SPLICES.len())];
                out.splice(at..at, splice.iter().copied());
            }
            _ => {
                // Duplicate a slice: repeated keys and documents.
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out
}

/// Runs `f` on a thread with a 2 MiB stack, what tokio workers and
/// `spawn_blocking` threads get: parsing must fit there.
fn on_a_2_mib_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .expect("spawning a thread")
        .join()
        .expect("the parse thread panicked");
}

#[test]
fn deep_documents_are_refused_within_a_2_mib_stack() {
    on_a_2_mib_stack(|| {
        for depth in [25, 100, 10_000] {
            let mut block =
                String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\ndata:\n");
            for i in 0..depth.min(2000) {
                block.push_str(&" ".repeat(i + 1));
                block.push_str("k:\n");
            }
            let flow = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: d}}\ndata: {}{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            );

            let json = format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"data\": {}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            for (name, text) in [
                ("block.yaml", block),
                ("flow.yaml", flow),
                ("deep.json", json),
            ] {
                let parsed = manifests::parse_file(Path::new(name), text.as_bytes());
                let first = parsed
                    .all_diagnostics()
                    .next()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(
                    first.contains("document refused")
                        || first.contains("recursion limit")
                        || first.contains("nests"),
                    "{name} at depth {depth}: {first}"
                );
            }
        }
    });
}

#[test]
fn mutated_manifests_never_panic() {
    on_a_2_mib_stack(mutated_manifests);
}

fn mutated_manifests() {
    let seeds = seeds();
    assert!(seeds.len() > 40, "seed corpus too small: {}", seeds.len());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for iteration in 0..3000 {
        let (path, bytes) = &seeds[rng.below(seeds.len())];
        let mutated = mutate(&mut rng, bytes);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x.yaml");
        // A panic here fails the test; the iteration number reproduces it.

        let parsed = if name == "hosts.toml" {
            manifests::parse_hosts_toml(Path::new("hosts.toml"), "fuzz.example", &mutated)
        } else {
            manifests::parse_file(Path::new(name), &mutated)
        };
        for diagnostic in parsed.all_diagnostics() {
            assert!(
                diagnostic.line >= 1 && diagnostic.column >= 1,
                "iteration {iteration}: diagnostic without a position: {diagnostic}"
            );
        }
    }
}
