"""The results of tests/sdk-suite: pytest's junit files of each engine read
back, compared, and written to target/sdk-suite/report.txt.
"""

import json
import xml.etree.ElementTree as ET

# The engines, in the order of the report's columns.
ENGINES = ["dockerd", "vmctl"]


def results(work, engine_name):
    """{test id: (outcome, first line of the failure)} from an engine's junit file."""
    junit = work / engine_name / "junit.xml"
    if not junit.exists():
        return None
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname = case.get("classname", "").removeprefix("tests.integration.")
        test = f"{classname}::{case.get('name')}"
        outcome, message = "passed", ""
        for kind in ["failure", "error", "skipped"]:
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                text = element.get("message") or element.text or ""
                message = text.strip().splitlines()[0][:300] if text.strip() else ""
                break
        found[test] = (outcome, message)
    return found


def meta(work, engine_name):
    try:
        return json.loads((work / engine_name / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def report(work, header, deselected):
    """Writes work/report.txt from each engine's last junit file (`header`
    lines first) and prints its summary."""
    lines = []
    add = lines.append
    lines.extend(header)
    outcomes = {name: results(work, name) for name in ENGINES}
    for name in ENGINES:
        found = outcomes[name]
        if found is None:
            add(f"{name}: not run")
            continue
        info = meta(work, name)
        counts = {k: sum(1 for o, _ in found.values() if o == k) for k in ["passed", "failed", "error", "skipped"]}
        add(f"{name}: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
            f"{counts['skipped']} skipped ({len(found)} tests; engine {info.get('engine_version')}; "
            f"commit {info.get('commit')}"
            f"{'; binary built ' + info['binary_built'] if info.get('binary_built') else ''}; "
            f"bridge {info.get('bridge')}; -k {info.get('k')!r}; "
            f"{info.get('seconds')} s; finished {info.get('finished')})")
    dockerd, vmctl = outcomes["dockerd"], outcomes["vmctl"]
    if dockerd is not None and vmctl is not None:
        oracle = sorted(t for t, (o, _) in dockerd.items() if o == "passed")
        both = [t for t in oracle if vmctl.get(t, ("missing", ""))[0] == "passed"]
        missing = [t for t in oracle if t not in both]
        rate = 100.0 * len(both) / len(oracle) if oracle else 0.0
        add("")
        add(f"vmctl passes {len(both)} of the {len(oracle)} tests that pass on dockerd: {rate:.1f} %")
        add("")
        add(f"Pass on dockerd, not on vmctl ({len(missing)}):")
        for test in missing:
            outcome, message = vmctl.get(test, ("not run", ""))
            add(f"  {test}  [{outcome}] {message}")
        extra = sorted(t for t, (o, _) in vmctl.items() if o == "passed" and dockerd.get(t, ("",))[0] != "passed")
        add("")
        add(f"Pass on vmctl, not on dockerd ({len(extra)}):")
        for test in extra:
            outcome, message = dockerd.get(test, ("not run", ""))
            add(f"  {test}  [{outcome}] {message}")
        add("")
        add(f"Pass on dockerd ({len(oracle)}):")
        lines.extend(f"  {t}" for t in oracle)
    add("")
    add("Every test (dockerd | vmctl):")
    tests = sorted(set().union(*(o.keys() for o in outcomes.values() if o)))
    for test in tests:
        cells = []
        for name in ENGINES:
            found = outcomes[name] or {}
            outcome, message = found.get(test, ("-", ""))
            cells.append(f"{outcome}{': ' + message if outcome in ('failed', 'error') else ''}")
        add(f"  {test}\n      dockerd: {cells[0]}\n      vmctl:   {cells[1]}")
    add("")
    add("Deselected (every engine):")
    lines.extend(f"  {node}  ({reason})" for node, reason in deselected)
    text = "\n".join(lines) + "\n"
    (work / "report.txt").write_text(text)
    # The summary on the terminal; everything in the file.
    summary = text.split("\nEvery test (dockerd | vmctl):")[0]
    summary = summary.split("\nPass on dockerd (")[0]
    print(summary)
    print(f"full report: {work / 'report.txt'}")
