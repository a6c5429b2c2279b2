"""`ivr validate` / `ivr schema`: every problem as file:line:col, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.flow.cli import schema_main, schema_text
from ivr.validate import validate_main, validate_paths

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SCHEMA = ROOT / "ivr" / "flow" / "flow.schema.json"


def run_validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = validate_main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_clean_flow_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yaml").write_text("steps: [answer, {say: hi}, hangup]\n")
    code, out, err = run_validate(capsys, str(tmp_path / "ok.yaml"))
    assert (code, out, err.strip()) == (0, [], "ok")


def test_errors_are_formatted_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - trasnfer: {to: '1'}\n  - goto: nowhere\n  - log: x\n")
    code, out, err = run_validate(capsys, str(bad))
    assert code == 1
    assert out == [f"{bad}:2:5: error: unknown step 'trasnfer' (did you mean 'transfer'?)"]
    assert "1 error(s)" in err
    # only warnings: exit 0, and -q hides them
    warn = tmp_path / "warn.yaml"
    warn.write_text("steps:\n  - hangup\n  - log: x\n")
    assert run_validate(capsys, str(warn))[:2] == (
        0, [f"{warn}:3:5: warning: unreachable step: it follows the hangup on line 2 and has no id"])
    assert run_validate(capsys, "-q", str(warn)) == (0, [], "")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_subflow_cycle_and_params(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "steps:\n  - subflow: {file: b.yaml, params: {pin: 1, bogus: 2}}\n")
    write(tmp_path, "b.yaml", "params: {pin: 0}\nsteps:\n  - subflow: c.yaml\n")
    write(tmp_path, "c.yaml", "steps:\n  - subflow: b.yaml\n")
    found = [d.format().replace(str(tmp_path) + "/", "") for d in validate_paths([a])]
    assert found == [
        "a.yaml:2:46: error: subflow 'b.yaml' has no parameter 'bogus' (it takes: pin)",
        "c.yaml:2:14: error: subflow cycle: b.yaml -> c.yaml -> b.yaml",
    ]


def test_self_call_is_a_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "loop.yaml", "steps:\n  - subflow: {file: loop.yaml}\n")
    assert [d.message for d in validate_paths([a])] == ["subflow cycle: loop.yaml -> loop.yaml"]


def test_errors_in_subflows_are_reported_once(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "steps:\n  - subflow: sub.yaml\n")
    write(tmp_path, "sub.yaml", "steps:\n  - bogus\n")
    found = validate_paths([a, tmp_path / "sub.yaml"])
    assert [(Path(d.file).name, d.line, d.message) for d in found] == [("sub.yaml", 2, "unknown step 'bogus'")]


def test_directories_expand_to_flow_files(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", "steps: [answer]\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "two.yml", "steps: [nope]\n")
    write(tmp_path, "notes.txt", "not a flow")
    assert [Path(d.file).name for d in validate_paths([tmp_path])] == ["two.yml"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [d.message for d in validate_paths([empty])] == ["no flow files (*.yaml, *.yml, *.py) in this directory"]


def test_python_flows_are_checked(tmp_path: Path) -> None:
    good = write(tmp_path, "good.py", "async def main(call):\n    await call.answer()\n")
    sync = write(tmp_path, "sync.py", "def main(call):\n    pass\n")
    broken = write(tmp_path, "broken.py", "async def main(call)\n")
    none = write(tmp_path, "none.py", "x = 1\n")
    found = {Path(d.file).name: d.format().split(": ", 1)[1] for d in validate_paths([good, sync, broken, none])}
    assert found == {
        "sync.py": "error: 'main' must be 'async def main(call)', not a plain function",
        "broken.py": "error: syntax error: expected ':'",
        "none.py": "error: no 'main' function: a Python flow defines 'async def main(call)'",
    }


@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)) * 40, "not UTF-8 text (binary file?)"),
        (b"steps: " + b"[" * 20000 + b"]" * 20000, "nested deeper than 64 levels"),
        (b"steps: " + b"{a: " * 3000 + b"1" + b"}" * 3000, "nested deeper than 64 levels"),
        ("".join("  " * i + "- if: true\n" + "  " * i + "  then:\n" for i in range(400)).encode(),
         "nested too deeply"),
        (b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
         b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
         b"steps: [*f]\n", "document too large: more than 200000 values (alias expansion?)"),
        (b"steps: &s [*s]\n", "a step is a name like"),
        (b"\x00\x01\x02", "unacceptable character #x0000"),
        (b"\tsteps: [answer]\n", "YAML: found character '\\t' that cannot start any token"),
        (b"steps: [answer]\n" + b"# padding\n" * 110_000, "file too large"),
    ],
    ids=["binary", "deep-brackets", "deep-mappings", "deep-indent", "alias-bomb", "recursive-alias", "nul",
         "tab", "1MB"],
)
def test_hostile_input_is_one_line_and_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            content: bytes, expected: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    started = time.perf_counter()
    code, out, err = run_validate(capsys, str(path))
    elapsed = time.perf_counter() - started
    assert code == 1 and "Traceback" not in err
    assert len(out) == 1 and expected in out[0], out
    assert out[0].startswith(f"{path}:")
    assert elapsed < 5.0  # measured: < 0.6 s each, apart from the alias bomb (~1 s)


def test_missing_file_and_directory_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_validate(capsys, str(tmp_path / "nope.yaml"), str(tmp_path / "x.yml"))
    assert code == 1
    assert out == [f"{tmp_path / 'nope.yaml'}:1:1: error: file not found",
                   f"{tmp_path / 'x.yml'}:1:1: error: file not found"]
    assert validate_main([]) == 2  # usage error, argparse message on stderr
    assert "usage" in capsys.readouterr().err


def test_unknown_suffix_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "flow.txt", "steps: [answer]\n")
    assert [d.format() for d in validate_paths([path])] == [
        f"{path}:1:1: error: unknown flow type '.txt': use .yaml, .yml or .py"]


def test_cli_in_a_subprocess_never_shows_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    proc = subprocess.run([sys.executable, "-m", "ivr.validate", str(path), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[0] == f"{path}:1:1: error: not UTF-8 text (binary file?)"


def test_project_flows_validate() -> None:
    flows = ROOT / "flows"
    if not flows.is_dir():
        pytest.skip("no flows/ folder")
    errors = [d.format() for d in validate_paths([flows]) if d.is_error]
    assert errors == []


def test_shipped_schema_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema_main([]) == 0
    printed = capsys.readouterr().out
    assert printed == schema_text()
    assert SHIPPED_SCHEMA.read_text(encoding="utf-8") == printed, (
        "ivr/flow/flow.schema.json is stale: run `ivr schema -o ivr/flow/flow.schema.json`")


def test_schema_accepts_real_flows_and_rejects_bad_ones(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    schema = json.loads(SHIPPED_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    docs_example = (ROOT / "docs" / "flows.md").read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    texts = [p.read_text() for p in sorted((ROOT / "flows").glob("*.yaml"))] + [docs_example]
    for text in texts:
        data = json.loads(json.dumps(YAML(typ="safe").load(text), default=str))
        assert list(validator.iter_errors(data)) == []
    for bad in ({"steps": [{"trasnfer": "1"}]}, {"steps": [{"play": "a", "say": "b"}]},
                {"steps": [{"menu": {"prompt": "a", "choices": {"1": []}, "timout": 3}}]}, {"stepz": []}):
        assert list(validator.iter_errors(bad)), bad


def test_http_urls_and_json_looking_bodies_are_warned_about(tmp_path: Path) -> None:
    flow = tmp_path / "http.yaml"
    flow.write_text(
        "params: {base: 'http://127.0.0.1:1'}\n"
        "steps:\n"
        "  - http: {url: '{{ params.base }}/x'}\n"                          # 3: encoded base: warned
        "  - http: {url: '{{ params.base | raw_url }}/x/{{ caller.number }}'}\n"  # 4: fine
        "  - http: {url: 'https://api.example/{{ caller.number }}'}\n"        # 5: fine
        "  - http: {url: 'https://{{ params.base }}/x'}\n"                    # 6: host from a value: warned
        "  - http: {method: post, url: 'https://api.example/x', body: '{\"name\": \"{{ caller.name }}\"}'}\n"  # 7
        "  - http: {method: post, url: 'https://api.example/x', body: '{\"name\": {{ caller.name | tojson }}}'}\n"
        "  - http: {method: post, url: 'https://api.example/x', body: 'name={{ caller.name }}'}\n"
    )
    found = [(d.line, d.severity, d.message) for d in validate_paths([flow])]
    assert [(line, sev) for line, sev, _ in found] == [(3, "warning"), (6, "warning"), (7, "warning")]
    assert "| raw_url" in found[0][2] and "use 'json: {...}'" in found[2][2]
