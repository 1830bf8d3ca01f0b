#!/usr/bin/env bash
# Prints one closing line 'N passed, N failed, N skipped' over every surefire report in the tree,
# so a reader of the CI log sees the whole count at the end (Maven prints one line per module).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import glob, xml.etree.ElementTree as ET
t = f = e = s = 0
for p in glob.glob('*/target/surefire-reports*/TEST-*.xml'):
    r = ET.parse(p).getroot()
    t += int(r.get('tests', 0)); f += int(r.get('failures', 0)); e += int(r.get('errors', 0)); s += int(r.get('skipped', 0))
print(f"tests: {t - f - e - s} passed, {f + e} failed, {s} skipped")
PY
