//! RFC 6962 / RFC 9162 known-answer vectors (SHA-256), every file under
//! `../shared/testdata/rfc6962/`, including all the deliberately broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use pdx_audit::merkle::{self, MemoryTree, Sha256};
use std::path::{Path, PathBuf};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/rfc6962");
    assert!(
        dir.is_dir(),
        "RFC 6962 vectors not found at {}: the shared test data must be present next to the repository (../shared/testdata/rfc6962)",
        dir.display()
    );
    dir
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_else(|_| b"not base64".to_vec())
}

fn proof(v: &serde_json::Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| a.iter().map(b64).collect())
        .unwrap_or_default()
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn load(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn tree_roots_match_for_every_size() {
    let v = load(&vectors_dir().join("tree_roots.json"));
    let leaves: Vec<Vec<u8>> = v["leaf_inputs_hex"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| hex::decode(x.as_str().unwrap_or_default()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let roots: Vec<String> = v["root_by_tree_size_hex"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(roots.len(), leaves.len() + 1);
    let mut tree = MemoryTree::new();
    assert_eq!(hex::encode(tree.root::<Sha256>()), roots[0]);
    for (i, leaf) in leaves.iter().enumerate() {
        tree.push_data::<Sha256>(leaf);
        assert_eq!(
            hex::encode(tree.root::<Sha256>()),
            roots[i + 1],
            "size {}",
            i + 1
        );
    }
    // Every proof our generator makes for these trees verifies.
    for size in 1..=tree.size() {
        let root = merkle::root::<Sha256, _>(&tree, size).unwrap_or_default();
        for index in 0..size {
            let p = merkle::inclusion_proof::<Sha256, _>(&tree, index, size).unwrap_or_default();
            let leaf = <Sha256 as merkle::MerkleHasher>::leaf(&leaves[index as usize]);
            assert_eq!(
                merkle::verify_inclusion::<Sha256, _>(index, size, &leaf, &p, &root),
                Ok(())
            );
        }
        for size1 in 1..=size {
            let root1 = merkle::root::<Sha256, _>(&tree, size1).unwrap_or_default();
            let p = merkle::consistency_proof::<Sha256, _>(&tree, size1, size).unwrap_or_default();
            assert_eq!(
                merkle::verify_consistency::<Sha256, _>(size1, size, &p, &root1, &root),
                Ok(())
            );
        }
    }
}

#[test]
fn every_inclusion_vector_gives_its_expected_verdict() {
    let mut files = Vec::new();
    json_files(&vectors_dir().join("inclusion"), &mut files);
    assert!(
        files.len() > 50,
        "expected the full inclusion vector set, found {}",
        files.len()
    );
    let (mut ok, mut err) = (0, 0);
    for f in &files {
        let v = load(f);
        let want_err = v["wantErr"].as_bool().unwrap_or(false);
        let got = merkle::verify_inclusion::<Sha256, _>(
            v["leafIdx"].as_u64().unwrap_or(u64::MAX),
            v["treeSize"].as_u64().unwrap_or(0),
            &b64(&v["leafHash"]),
            &proof(&v["proof"]),
            &b64(&v["root"]),
        );
        assert_eq!(
            got.is_err(),
            want_err,
            "{}: {:?} ({})",
            f.display(),
            got,
            v["desc"]
        );
        if want_err { err += 1 } else { ok += 1 }
    }
    assert!(ok > 0 && err > 0);
}

#[test]
fn every_consistency_vector_gives_its_expected_verdict() {
    let mut files = Vec::new();
    json_files(&vectors_dir().join("consistency"), &mut files);
    assert!(
        files.len() > 50,
        "expected the full consistency vector set, found {}",
        files.len()
    );
    for f in &files {
        let v = load(f);
        let want_err = v["wantErr"].as_bool().unwrap_or(false);
        let got = merkle::verify_consistency::<Sha256, _>(
            v["size1"].as_u64().unwrap_or(u64::MAX),
            v["size2"].as_u64().unwrap_or(0),
            &proof(&v["proof"]),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
        );
        assert_eq!(
            got.is_err(),
            want_err,
            "{}: {:?} ({})",
            f.display(),
            got,
            v["desc"]
        );
    }
}
