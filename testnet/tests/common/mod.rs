//! Shared helpers for the multi-process integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_testnet::Testnet;
use serde_json::Value;
use std::path::Path;

pub const PEOPLE_SCHEMA: &str = r#"
[dataset]
id = "people"
title = "residents (test)"
grade = "general"
sharing = "conditional"
personal_information = true

[[field]]
name = "pid"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "name"
type = "string"
identifier = "direct-identifier"
pi = "personal"

[[field]]
name = "certno"
type = "resident-id"
identifier = "direct-identifier"
pi = "sensitive-personal"

[[field]]
name = "city"
type = "string"
identifier = "quasi-identifier"
pi = "personal"

[[field]]
name = "amount"
type = "decimal"
precision = 10
scale = 2
identifier = "other"
pi = "personal"

[profile.share]
[profile.share.fields]
pid = "pseudonymize"
name = "drop"
certno = { encrypt_for = "100000" }
city = "keep"
amount = "keep"
"#;

pub const PEOPLE_CSV: &str = "pid,name,certno,city,amount\n\
P001,张三,11010519491231002X,广州,12.50\n\
P002,李四,440524188001010014,深圳,7.00\n\
P003,王五,11010519491231002X,广州,100.99\n";

/// A network with the given nodes, peers configured, all started.
pub fn network(dir: &Path, nodes: &[(&str, &str)]) -> Testnet {
    let mut net = Testnet::create(dir, "itest").unwrap();
    for (dept, name) in nodes {
        net.add_node(dept, name).unwrap();
    }
    net.connect_all().unwrap();
    net.start_all().unwrap();
    net
}

/// Audit entries of `dept` with the given kind.
pub fn entries(net: &Testnet, dept: &str, kind: &str) -> Vec<Value> {
    let home = net.home(dept).unwrap();
    net.pdx_json(&["audit", "show", "--home", &home, "--kind", kind])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Writes a file and returns its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}
