//! Synthetic cross-province settlement records that look real: the 31
//! provincial admdvs codes and prefectures under them, resident ID numbers with
//! valid GB 11643 check digits, ICD-10 codes with a Zipf-like skew, coherent
//! insurance and medical types, long-tailed amounts whose fund, account and
//! cash parts add up to the total. Deterministic for a seed; streamed, so 10M
//! rows need no more memory than one.

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use std::io::Write;

/// The 31 provincial-level divisions (admdvs code, name), largest participants first.
pub const PROVINCES: [(&str, &str); 31] = [
    ("440000", "广东"),
    ("110000", "北京"),
    ("310000", "上海"),
    ("320000", "江苏"),
    ("330000", "浙江"),
    ("510000", "四川"),
    ("370000", "山东"),
    ("410000", "河南"),
    ("420000", "湖北"),
    ("430000", "湖南"),
    ("130000", "河北"),
    ("340000", "安徽"),
    ("350000", "福建"),
    ("500000", "重庆"),
    ("610000", "陕西"),
    ("210000", "辽宁"),
    ("360000", "江西"),
    ("450000", "广西"),
    ("530000", "云南"),
    ("520000", "贵州"),
    ("140000", "山西"),
    ("230000", "黑龙江"),
    ("220000", "吉林"),
    ("150000", "内蒙古"),
    ("120000", "天津"),
    ("650000", "新疆"),
    ("620000", "甘肃"),
    ("460000", "海南"),
    ("640000", "宁夏"),
    ("630000", "青海"),
    ("540000", "西藏"),
];

/// Common principal diagnoses (ICD-10, national extension style), most frequent first.
pub const DIAGNOSES: [&str; 48] = [
    "I10.x00", "J18.900", "E11.900", "I63.900", "I25.100", "J44.100", "C34.900", "K80.200",
    "N18.500", "I50.900", "J20.900", "K29.700", "M17.900", "S72.000", "O80.000", "C16.900",
    "C50.900", "C22.000", "I48.900", "J06.900", "K35.800", "N39.000", "E78.500", "G45.900",
    "I20.000", "K74.600", "M51.200", "R50.900", "A09.000", "B18.100", "C18.900", "C61.x00",
    "D25.900", "E04.900", "F32.900", "G40.900", "H25.900", "H40.900", "I21.900", "I61.900",
    "J45.900", "K57.300", "K92.200", "L40.900", "M81.000", "N20.000", "O34.200", "Z51.100",
];

pub(crate) const SURNAMES: [&str; 20] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗",
];
pub(crate) const GIVEN: [&str; 24] = [
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀", "霞", "平", "刚", "桂", "英", "华",
];

/// CSV header (the settlement schema's field order).
pub const HEADER: [&str; 23] = [
    "setl_id",
    "mdtrt_id",
    "psn_no",
    "certno",
    "psn_name",
    "gend",
    "brdy",
    "age",
    "naty",
    "insutype",
    "psn_type",
    "insuplc_admdvs",
    "mdtrtarea_admvs",
    "fixmedins_code",
    "med_type",
    "setl_time",
    "diag_code",
    "medfee_sumamt",
    "fund_pay_sumamt",
    "hifp_pay",
    "acct_pay",
    "psn_cash_pay",
    "clr_type",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Participating provinces (the first P of [`PROVINCES`]); at least 2.
    pub provinces: usize,
    /// Records to draw (before the `treated_in` filter).
    pub records: u64,
    /// Seed.
    pub seed: u64,
    /// Only write records treated in this province.
    pub treated_in: Option<String>,
    /// Settlement month `YYYY-MM`.
    pub month: (i32, u32),
}

/// One person, derived from (seed, insured province, index): the same person
/// every time, without a table in memory.
#[derive(Debug, Clone)]
pub struct Person {
    /// Insured person number.
    pub psn_no: String,
    /// Resident ID number.
    pub certno: String,
    /// Name.
    pub name: String,
    /// 1 male, 2 female.
    pub gend: u8,
    /// Birth (y, m, d).
    pub birth: (i32, u32, u32),
    /// Insured county-level admdvs code.
    pub region: String,
    /// Ethnicity code.
    pub naty: String,
    /// 310 employee / 390 resident.
    pub insutype: &'static str,
}

fn prefectures(province: usize) -> u32 {
    4 + (province as u32 * 7) % 12
}

/// The person `index` insured in province number `p`.
pub fn person(seed: u64, p: usize, index: u64) -> Person {
    let mut r = ChaCha8Rng::seed_from_u64(
        seed ^ (p as u64) << 40 ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let prov = &PROVINCES[p].0[..2];
    let region = format!(
        "{prov}{:02}{:02}",
        1 + r.random_range(0..prefectures(p)),
        1 + r.random_range(0..8u32)
    );
    // Age mix of patients: children, working age, older (more care, more records).
    let age: i32 = match r.random_range(0..100) {
        0..10 => r.random_range(0..15),
        10..35 => r.random_range(15..45),
        35..70 => r.random_range(45..65),
        _ => r.random_range(65..98),
    };
    let birth = (
        2026 - age - 1 + i32::from(r.random_range(0..2u8)),
        r.random_range(1..=12u32),
        r.random_range(1..=28u32),
    );
    let gend: u8 = if r.random_bool(0.5) { 1 } else { 2 };
    let seq: u32 = r.random_range(0..500) * 2 + if gend == 1 { 1 } else { 0 };
    let first17 = format!("{region}{:04}{:02}{:02}{seq:03}", birth.0, birth.1, birth.2);
    let check = pdx_schemas::resident_id::check_char(first17.as_bytes())
        .map(char::from)
        .unwrap_or('0');
    let name = format!(
        "{}{}{}",
        SURNAMES[r.random_range(0..SURNAMES.len())],
        GIVEN[r.random_range(0..GIVEN.len())],
        if r.random_bool(0.6) {
            GIVEN[r.random_range(0..GIVEN.len())]
        } else {
            ""
        }
    );
    let naty = if r.random_bool(0.91) {
        "01".to_string()
    } else {
        format!("{:02}", r.random_range(2..=56u32))
    };
    Person {
        psn_no: format!("{prov}{:014}", index),
        certno: format!("{first17}{check}"),
        name,
        gend,
        birth,
        region,
        naty,
        insutype: if age >= 18 && r.random_bool(0.62) {
            "310"
        } else {
            "390"
        },
    }
}

/// People insured per participating province (records spread over them).
pub fn pool_size(records: u64, provinces: usize) -> u64 {
    (records / (3 * provinces as u64)).max(50)
}

fn zipf_index(r: &mut ChaCha8Rng, n: usize) -> usize {
    // Weights 1/(i+1)^0.9 by inverse transform over a precomputed-free loop.
    let total: f64 = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(0.9)).sum();
    let mut x = r.random::<f64>() * total;
    for i in 0..n {
        x -= 1.0 / ((i + 1) as f64).powf(0.9);
        if x <= 0.0 {
            return i;
        }
    }
    n - 1
}

fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// What was generated.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Rows written.
    pub rows: u64,
    /// Rows per treatment province.
    pub by_treatment: std::collections::BTreeMap<String, u64>,
}

/// Writes settlement records as CSV.
pub fn settlement<W: Write>(opts: &Options, out: W) -> Result<Summary> {
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(1 << 20, out));
    w.write_record(HEADER)?;
    let summary = each_record(opts, |_, row| Ok(w.write_record(row)?))?;
    w.flush()?;
    Ok(summary)
}

/// Writes one CSV per treatment province (`FILE` = `dir/treated-CODE.csv`)
/// in one pass; returns the paths by province code.
pub fn settlement_by_province(
    opts: &Options,
    dir: &std::path::Path,
) -> Result<(Summary, Vec<(String, std::path::PathBuf)>)> {
    let mut paths = Vec::new();
    let mut writers = Vec::new();
    for (code, _) in PROVINCES.iter().take(opts.provinces) {
        let path = dir.join(format!("treated-{code}.csv"));
        let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&path)?,
        ));
        w.write_record(HEADER)?;
        writers.push(w);
        paths.push((code.to_string(), path));
    }
    let summary = each_record(opts, |t, row| Ok(writers[t].write_record(row)?))?;
    for mut w in writers {
        w.flush()?;
    }
    Ok((summary, paths))
}

/// Writes the insured registry of province number `p` (everyone records may
/// name): `psn_no,certno,psn_name,insuplc_admdvs`.
pub fn registry(opts: &Options, p: usize, path: &std::path::Path) -> Result<u64> {
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path)?,
    ));
    w.write_record(["psn_no", "certno", "psn_name", "insuplc_admdvs"])?;
    let pool = pool_size(opts.records, opts.provinces);
    for i in 0..pool {
        let person = person(opts.seed, p, i);
        w.write_record([&person.psn_no, &person.certno, &person.name, &person.region])?;
    }
    w.flush()?;
    Ok(pool)
}

/// Draws the records and calls `emit(treatment province number, row)` for each.
fn each_record(
    opts: &Options,
    mut emit: impl FnMut(usize, &[&str]) -> Result<()>,
) -> Result<Summary> {
    if !(2..=31).contains(&opts.provinces) {
        bail!(
            "--provinces must be between 2 and 31 (patients are insured in another participating province)"
        );
    }
    let mut r = ChaCha8Rng::seed_from_u64(opts.seed);
    let pool = pool_size(opts.records, opts.provinces);
    let inpatient = LogNormal::new(9.4, 0.9)?; // median ≈ 12,000 yuan
    let outpatient = LogNormal::new(5.4, 1.0)?; // median ≈ 220 yuan
    let mut summary = Summary::default();
    let diag_weights = DIAGNOSES.len();
    for n in 0..opts.records {
        // Larger provinces treat more visitors: weight by position.
        let t = zipf_index(&mut r, opts.provinces);
        let mut i = zipf_index(&mut r, opts.provinces);
        if i == t {
            i = (i + 1 + r.random_range(0..opts.provinces - 1)) % opts.provinces;
            if i == t {
                i = (t + 1) % opts.provinces;
            }
        }
        let person_index = r.random_range(0..pool);
        let (day, hour, minute, second) = (
            r.random_range(1..=28u32),
            r.random_range(0..24u32),
            r.random_range(0..60u32),
            r.random_range(0..60u32),
        );
        let kind_roll = r.random_range(0..100);
        let diag_roll = zipf_index(&mut r, diag_weights);
        let amount_draw: f64 = r.random();
        let rate_draw: f64 = r.random();
        let acct_draw: f64 = r.random();
        let hosp = r.random_range(1..=60u32);
        let treat_code = PROVINCES[t].0;
        if opts.treated_in.as_deref().is_some_and(|d| d != treat_code) {
            continue;
        }
        let p = person(opts.seed, i, person_index);
        let age =
            opts.month.0 - p.birth.0 - i32::from((opts.month.1, day) < (p.birth.1, p.birth.2));
        let (med_type, clr_type, inpat) = match kind_roll {
            0..45 => ("21", "21", true),
            45..80 => ("11", "11", false),
            80..95 => ("14", "11", false),
            95..97 if p.gend == 2 && (20..45).contains(&age) => ("52", "21", true),
            _ => ("28", "21", true),
        };
        let diag = if med_type == "52" {
            "O80.000"
        } else {
            DIAGNOSES[diag_roll]
        };
        let dist = if inpat { &inpatient } else { &outpatient };
        let total_fen = ((dist.sample(&mut ChaCha8Rng::seed_from_u64((amount_draw * 1e18) as u64))
            * 100.0) as u64)
            .clamp(500, 300_000_000);
        let rate = if inpat {
            0.55 + 0.25 * rate_draw
        } else {
            0.30 + 0.30 * rate_draw
        };
        let fund = (total_fen as f64 * rate) as u64;
        let acct = if p.insutype == "310" {
            ((total_fen - fund) as f64 * 0.5 * acct_draw) as u64
        } else {
            0
        };
        let cash = total_fen - fund - acct;
        let hifp = (fund as f64 * 0.9) as u64;
        let psn_type = match (p.insutype, age) {
            ("310", a) if a >= 60 => "12",
            ("310", _) => "11",
            (_, a) if a < 18 => "22",
            _ => "21",
        };
        let treat_pref = format!("{}{:02}00", &treat_code[..2], 1 + (hosp % prefectures(t)));
        let setl = format!("{}{:012}", &treat_code[..2], n);
        emit(
            t,
            &[
                format!("S{setl}").as_str(),
                format!("M{setl}").as_str(),
                &p.psn_no,
                &p.certno,
                &p.name,
                &p.gend.to_string(),
                &format!("{:04}-{:02}-{:02}", p.birth.0, p.birth.1, p.birth.2),
                &age.max(0).to_string(),
                &p.naty,
                p.insutype,
                psn_type,
                &p.region,
                &treat_pref,
                &format!("H{treat_pref}{hosp:05}"),
                med_type,
                &format!(
                    "{:04}-{:02}-{day:02} {hour:02}:{minute:02}:{second:02}",
                    opts.month.0, opts.month.1
                ),
                diag,
                &yuan(total_fen),
                &yuan(fund),
                &yuan(hifp),
                &yuan(acct),
                &yuan(cash),
                clr_type,
            ],
        )?;
        summary.rows += 1;
        *summary
            .by_treatment
            .entry(treat_code.to_string())
            .or_default() += 1;
    }
    Ok(summary)
}
