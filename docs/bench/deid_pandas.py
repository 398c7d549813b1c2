"""The analytics de-identification of schemas/medical_insurance/settlement.toml
written as a plain pandas script, for the side-by-side benchmark in
docs/benchmarks.md. Same validation (patterns, resident-ID check digits,
decimals), same treatments (keyed BLAKE3 pseudonym, year, province, month,
ICD-10 category, amounts rounded to 10 yuan, care setting), same privacy model
(k >= 10 and distinct l >= 3 on the diagnosis category, classes below either
suppressed, at most 5% suppressed). Usage: deid_pandas.py IN.csv OUT.csv"""
import sys

import blake3
import numpy as np
import pandas as pd

src, dst = sys.argv[1], sys.argv[2]
KEY = bytes(32)
AMOUNTS = ["medfee_sumamt", "fund_pay_sumamt", "hifp_pay", "acct_pay", "psn_cash_pay"]
SETTING = {"11": "outpatient", "12": "outpatient", "13": "outpatient", "14": "outpatient", "51": "outpatient",
           "21": "inpatient", "22": "inpatient", "28": "inpatient", "52": "inpatient"}
PATTERNS = {
    "setl_id": r"^[0-9A-Z]{1,30}$", "mdtrt_id": r"^[0-9A-Z]{1,30}$", "psn_no": r"^[0-9A-Z]{1,30}$",
    "insuplc_admdvs": r"^[1-9][0-9]{5}$", "mdtrtarea_admvs": r"^[1-9][0-9]{5}$", "fixmedins_code": r"^H[0-9]{11}$",
    "diag_code": r"^[A-Z][0-9]{2}(\.[0-9A-Zx]{1,4})?$", "brdy": r"^\d{4}-\d{2}-\d{2}$",
    "setl_time": r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$",
}

df = pd.read_csv(src, dtype=str, keep_default_na=False)
for col, rx in PATTERNS.items():
    bad = ~df[col].str.match(rx)
    if bad.any():
        sys.exit(f"{col}: {int(bad.sum())} invalid values")
pd.to_datetime(df["brdy"], format="%Y-%m-%d")  # real dates
digits = np.frombuffer("".join(df["certno"].str[:17]).encode(), dtype=np.uint8).reshape(-1, 17) - 48
weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
expected = np.array(list("10X98765432"))[(digits * weights).sum(axis=1) % 11]
if (expected != df["certno"].str[17].str.upper().to_numpy()).any():
    sys.exit("certno: bad check digits")
for a in AMOUNTS:
    pd.to_numeric(df[a], errors="raise")

out = pd.DataFrame()
out["psn_no"] = [blake3.blake3(v.encode(), key=KEY).hexdigest()[:32] for v in df["psn_no"]]
out["gend"] = df["gend"]
out["brdy"] = df["brdy"].str[:4]
out["insutype"] = df["insutype"]
out["insuplc_admdvs"] = df["insuplc_admdvs"].str[:2] + "0000"
out["mdtrtarea_admvs"] = df["mdtrtarea_admvs"].str[:2] + "0000"
out["med_type"] = df["med_type"].map(SETTING)
out["setl_time"] = df["setl_time"].str[:7]
out["diag_code"] = df["diag_code"].str[:3]
for a in AMOUNTS:
    out[a] = ((pd.to_numeric(df[a]) / 10).round() * 10).map("{:.2f}".format)
out["clr_type"] = df["clr_type"]

qi = ["gend", "brdy", "insutype", "insuplc_admdvs", "mdtrtarea_admvs", "setl_time"]
groups = out.groupby(qi, sort=False)["diag_code"]
keep = (groups.transform("size") >= 10) & (groups.transform("nunique") >= 3)
suppressed = int((~keep).sum())
if suppressed > 0.05 * len(out):
    sys.exit(f"refused: {suppressed} of {len(out)} would be suppressed")
out[keep].to_csv(dst, index=False)
print(f"{len(out)} in, {int(keep.sum())} out, {suppressed} suppressed")
