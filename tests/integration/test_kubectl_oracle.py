"""Real kubectl judges kubeconfig.py: it must load what we write and read it as we meant, we must
read what it reads as it reads it, refuse exactly the files it refuses, and put every change into
the file kubectl would. Needs no network: kubectl only reads and writes files here."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kubectl_caas import goyaml, kubeconfig
from tests.integration.harness import KUBECTL
from tests.unit.test_kubeconfig import REFUSALS
from tests.unit.test_goyaml import GO_YAML_TYPING, ambiguous_text, config_with, number_like, words

GOLDEN = Path(__file__).parent.parent / "unit" / "golden"
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def kubectl(root: Path, kubeconfig_env: str, *args: str, check: bool = True, cwd: Optional[Path] = None
            ) -> subprocess.CompletedProcess:
    """kubectl with a clean environment: its own HOME under `root`, KUBECONFIG given explicitly."""
    home = root / "kubectl-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": kubeconfig_env}
    done = subprocess.run([str(KUBECTL), *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=cwd or root, stdin=subprocess.DEVNULL)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done


def view(root: Path, kubeconfig_env: str) -> Dict[str, Any]:
    return json.loads(kubectl(root, kubeconfig_env, "config", "view", "-o", "json", "--raw").stdout)


def by_name(items: Optional[List[Dict[str, Any]]], body: str) -> Dict[str, Any]:
    return {item["name"]: item.get(body) for item in items or []}


# --- what we write, read by kubectl ------------------------------------------------------------------

unique_texts = st.lists(ambiguous_text, min_size=1, max_size=20, unique=True)


@SLOW
@given(unique_texts)
def test_every_string_we_write_is_read_by_kubectl_as_the_same_string(tmp_path_factory, strings):
    root = tmp_path_factory.mktemp("strings")
    path = root / "kc"
    path.write_bytes(goyaml.dump(config_with(strings)))
    seen = view(root, str(path))
    # kubectl leaves out optional fields that are empty
    assert by_name(seen["clusters"], "cluster") == {s: {"server": s, **({"tls-server-name": s} if s else {})}
                                                    for s in strings}
    contexts, users = by_name(seen["contexts"], "context"), by_name(seen["users"], "user")
    assert {name: (c["cluster"], c["user"], c.get("namespace")) for name, c in contexts.items()} == \
        {s: (s, s, s or None) for s in strings}
    assert {name: (u["exec"]["command"], u["exec"]["args"], u["exec"]["env"]) for name, u in users.items()} == \
        {s: (s, [s], [{"name": s, "value": s}]) for s in strings}
    assert seen["current-context"] == strings[0]
    assert seen["extensions"][0]["extension"] == {s: s for s in strings}
    assert by_name(seen["preferences"]["extensions"], "extension") == {s: [s] for s in strings}


KNOWN_BAD = ["n", "y", "Y", "N", "yes", "NO", "on", "Off", "1e3", "0o17", "08", ".5", "1_000", "0x1F", "~", "null", "<<",
             "=", "1:20", "2001-12-14", "-.inf", ".NaN", "0b-101", "+5", "-0", "", " ", "a: b", "#x", "- x", "\t",
             "\x00", "\ufeffx", "\u2028", "é", "😀", "x" * 300, "a " * 100]


def entries_from(names: List[str]) -> List[kubeconfig.Entry]:
    """Logins whose every field is one of `names` (rotated, so each section's names stay unique)."""
    found = []
    for i, name in enumerate(names):
        other = names[(i + 1) % len(names)]
        found.append(kubeconfig.Entry(context=name, cluster=other, server=name, user=other, namespace=name or None,
                                      user_body=kubeconfig.exec_user_body(name, [name, other])))
    return found


def check_logins_read_back(root: Path, names: List[str]) -> None:
    path = root / "kc"
    for entry in entries_from(names):
        kubeconfig.upsert(entry, explicit_path=str(path), force=True)
    seen = view(root, str(path))
    clusters, users, contexts = (by_name(seen[s], b) for s, b in kubeconfig.SECTIONS.items())
    for entry in entries_from(names):
        assert contexts[entry.context] == {"cluster": entry.cluster, "user": entry.user,
                                           **({"namespace": entry.namespace} if entry.namespace else {})}
        assert clusters[entry.cluster]["server"] == entry.server
        assert users[entry.user]["exec"]["command"] == entry.user_body["exec"]["command"]
        assert users[entry.user]["exec"]["args"] == entry.user_body["exec"]["args"]
    assert seen["current-context"] == names[-1]


def test_logins_with_names_yaml_would_retype_are_read_by_kubectl_as_meant(tmp_path):
    check_logins_read_back(tmp_path, KNOWN_BAD)


@SLOW
@given(unique_texts)
def test_logins_with_any_names_are_read_by_kubectl_as_meant(tmp_path_factory, names):
    check_logins_read_back(tmp_path_factory.mktemp("logins"), names)


# --- what we read, compared with what kubectl reads -------------------------------------------------


def kubectl_typing(root: Path, texts: List[str]) -> List[Any]:
    """What kubectl makes of each text written unquoted as a value (an extension keeps JSON types)."""
    lines = ["extensions:", "- name: typing", "  extension:"]
    lines += [f'    "k{i:04d}": {text}' for i, text in enumerate(texts)]
    path = root / "typing"
    path.write_text("\n".join(lines) + "\n")
    extension = view(root, str(path))["extensions"][0]["extension"]
    return [extension[f"k{i:04d}"] for i in range(len(texts))]


def same_meaning(kubectl_json: Any, ours: Any) -> bool:
    if isinstance(ours, bool) or ours is None or isinstance(ours, str):
        return type(kubectl_json) is type(ours) and kubectl_json == ours
    return isinstance(kubectl_json, (int, float)) and not isinstance(kubectl_json, bool) and \
        math.isclose(kubectl_json, ours, rel_tol=1e-15, abs_tol=0.0)


def test_the_typing_table_of_the_unit_tests_is_what_kubectl_does(tmp_path):
    texts = [text for text, _ in GO_YAML_TYPING]
    for text, wanted, got in zip(texts, [w for _, w in GO_YAML_TYPING], kubectl_typing(tmp_path, texts)):
        assert same_meaning(got, wanted), (text, got, wanted)


plain_texts = st.one_of(number_like, words, st.text(alphabet="0123456789abcdefxyon+-._~=<:", min_size=1, max_size=8))


def plain_safe(text: str) -> bool:
    """Texts that are one plain scalar to both parsers; kubectl rejects the whole file over .nan and .inf."""
    kind, value = goyaml.go_resolve(text)
    return not text.endswith(":") and ": " not in text and text not in ("-", "<<") and \
        not (kind == "float" and not math.isfinite(value))


@SLOW
@given(st.lists(plain_texts.filter(plain_safe), min_size=1, max_size=60))
def test_plain_scalars_are_typed_as_kubectl_types_them(tmp_path_factory, texts):
    root = tmp_path_factory.mktemp("typing")
    for text, got in zip(texts, kubectl_typing(root, texts)):
        assert same_meaning(got, goyaml.go_resolve(text)[1]), (text, got)


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.yaml")))
def test_kubectl_refuses_exactly_the_golden_files_we_refuse(tmp_path, name):
    path = tmp_path / name
    shutil.copy(GOLDEN / name, path)
    kubectl_loads = kubectl(tmp_path, str(path), "config", "view", check=False).returncode == 0
    assert kubectl_loads == name.startswith("valid_")
    assert name.startswith("valid_") or name in REFUSALS
    before = path.read_bytes()
    caas = kubeconfig.Entry(context="caas", cluster="caas", server="https://127.0.0.1:6443", user="caas",
                            user_body=kubeconfig.exec_user_body("kubectl-openstack", ["get-token"]))
    if kubectl_loads:
        kubeconfig.check_before_login("caas", caas.server, lambda body: True, str(path))
        kubeconfig.upsert(caas, explicit_path=str(path), force=True)
        view(tmp_path, str(path))  # and kubectl still loads it after our login
    else:
        with pytest.raises(kubeconfig.KubeconfigError, match=str(path)):
            kubeconfig.check_before_login("caas", caas.server, lambda body: True, str(path))
        with pytest.raises(kubeconfig.KubeconfigError, match=str(path)):
            kubeconfig.upsert(caas, explicit_path=str(path), force=True)
        assert path.read_bytes() == before


# YAML syntax corners where PyYAML's and go-yaml's readers could differ
SYNTAX = {
    "byte order mark": "\ufeffcurrent-context: a\n".encode(),
    "CRLF": b"current-context: a\r\nclusters:\r\n- name: x\r\n",
    "UTF-16": "\ufeffcurrent-context: a\n".encode("utf-16-le"),
    "Latin-1 byte": "current-context: caf\xe9\n".encode("latin-1"),
    "control character": b"current-context: a\x07\n",
    "tab as indentation": b"clusters:\n\t- name: x\n",
    "tab after colon": b"current-context:\ta\n",
    "tab inside a plain value": b"current-context: a\tb\n",
    "tab before a comment": b"current-context: a\t# c\n",
    "tab in flow": b"clusters: [\t{name: x}]\n",
    "no-break space after colon": "current-context:\xa0a\n".encode(),
    "explicit key": b"? current-context\n: a\n",
    "second document broken": b"current-context: a\n...\ngarbage: [\n",
    "YAML 1.1 directive": b"%YAML 1.1\n---\ncurrent-context: a\n",
    "YAML 1.2 directive": b"%YAML 1.2\n---\ncurrent-context: a\n",
    "TAG directive": b"%TAG !k! tag:example.com,2000:\n---\ncurrent-context: !k!x a\n",
    "folded plain": b"current-context: a\n  b\n",
    "literal block": b"current-context: |\n  a\n",
    "folded block": b"current-context: >-\n  a\n  b\n",
    "single-quoted lines": b"current-context: 'a\n\n  b'\n",
    "double-quoted continuation": b'current-context: "a\\\n  b"\n',
    "anchored key": b"&k current-context: a\n",
    "empty key": b": a\n",
    "key over 1024 characters": ("x" * 1100 + ": 1\n").encode(),
    "content on the document start line": b"--- current-context: a\n",
    "merge key after the key it overrides": b"b: &b {current-context: merged}\ncurrent-context: own\n<<: *b\n",
    "merge key before the key that overrides it": b"b: &b {current-context: merged}\n<<: *b\ncurrent-context: own\n",
    "bare equals": b"current-context: =\n",
}


@pytest.mark.parametrize("case", sorted(SYNTAX))
def test_yaml_corners_are_read_or_refused_as_kubectl_does(tmp_path, case):
    path = tmp_path / "kc"
    path.write_bytes(SYNTAX[case])
    done = kubectl(tmp_path, str(path), "config", "view", "-o", "json", "--raw", check=False)
    try:
        ours: Optional[str] = kubeconfig.load([str(path)]).current_context
    except kubeconfig.KubeconfigError:
        ours = None
    theirs = json.loads(done.stdout)["current-context"] if done.returncode == 0 else None
    assert ours == theirs, done.stderr


# Small kubeconfigs with one unquoted value in a typed place, or a duplicate: kubectl's verdict is
# the one we must reach. Values are plain scalars, so go-yaml's typing decides many verdicts.
FIELDS = {
    "namespace": "contexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: {v}}}\n",
    "server": "clusters:\n- name: c\n  cluster: {{server: {v}}}\n",
    "cluster name": "clusters:\n- name: {v}\n  cluster: {{server: s}}\n",
    "current-context": "current-context: {v}\n",
    "insecure": "clusters:\n- name: c\n  cluster: {{server: s, insecure-skip-tls-verify: {v}}}\n",
    "exec arg": "users:\n- name: u\n  user:\n    exec: {{command: c, args: [a, {v}]}}\n",
    "kind": "kind: {v}\n",
    "apiVersion": "apiVersion: {v}\n",
    "unknown field": "x-tool: {{setting: {v}}}\n",
    "extension key": "extensions:\n- name: e\n  extension: {{{v}: 1}}\n",
    "ca data": "clusters:\n- name: c\n  cluster: {{server: s, certificate-authority-data: {v}}}\n",
    "colors": "preferences: {{colors: {v}}}\n",
    "two clusters": "clusters:\n- name: {v}\n- name: {v}\n",
    "two extensions": "extensions:\n- name: {v}\n  extension: {v}\n- name: {v}\n  extension: {v}\n",
}


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(FIELDS)), st.one_of(plain_texts, st.sampled_from(["Config", "v1", "Zm9v", "~", "''", "true"])))
def test_we_refuse_exactly_the_files_kubectl_refuses(tmp_path_factory, field, value):
    assume(not value.endswith(":") and value not in ("-", "<<"))
    root = tmp_path_factory.mktemp("verdict")
    path = root / "kc"
    path.write_text(FIELDS[field].format(v=value))
    done = kubectl(root, str(path), "config", "view", "-o", "json", "--raw", check=False)
    try:
        kubeconfig.load_file(str(path))
        ours = None
    except kubeconfig.KubeconfigError as refusal:
        ours = str(refusal)
    assert (done.returncode == 0) == (ours is None), f"{field}={value!r}: kubectl: {done.stderr.strip()} ours: {ours}"


# --- files kubectl wrote, read by us --------------------------------------------------------------

# What kubectl's command line takes as a name (no NUL, no leading dash, no dot) and reads back itself:
# go-yaml writes DEL, the C1 controls, U+FFFE and U+FFFF unescaped, and kubectl then refuses (or,
# for NEL, changes) its own file. We escape them; kubectl-written files with them are not a case.
KUBECTL_CANNOT_ROUND_TRIP = set(".\x00\ufffe\uffff") | {chr(c) for c in range(0x7f, 0xa0)}
cli_text = ambiguous_text.filter(lambda t: t and not t.startswith("-") and not KUBECTL_CANNOT_ROUND_TRIP & set(t))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(cli_text, min_size=1, max_size=3, unique=True))
def test_files_kubectl_wrote_are_read_as_kubectl_reads_them_and_survive_our_login(tmp_path_factory, names):
    root = tmp_path_factory.mktemp("kubectl-wrote")
    path = root / "kc"
    for name in names:
        kubectl(root, str(path), "config", "set-cluster", name, f"--server={name}", f"--tls-server-name={name}")
        kubectl(root, str(path), "config", "set-context", name, f"--cluster={name}", f"--user={name}",
                f"--namespace={name}")
        kubectl(root, str(path), "config", "set-credentials", name, f"--token={name}")
    kubectl(root, str(path), "config", "use-context", names[0])
    before = view(root, str(path))
    ours = kubeconfig.load([str(path)])
    assert ours.current_context == names[0]
    for name in names:
        assert ours.get("clusters", name)["cluster"] == by_name(before["clusters"], "cluster")[name]
        assert ours.get("contexts", name)["context"] == by_name(before["contexts"], "context")[name]
        assert ours.get("users", name)["user"] == by_name(before["users"], "user")[name]
    caas = kubeconfig.Entry(context="caas-login", cluster="caas-login", server="https://127.0.0.1:6443",
                            user="caas-login", user_body=kubeconfig.exec_user_body("kubectl-openstack", ["get-token"]))
    kubeconfig.upsert(caas, explicit_path=str(path))
    after = view(root, str(path))
    for section, body in kubeconfig.SECTIONS.items():
        kept = {k: v for k, v in by_name(after[section], body).items() if k != "caas-login"}
        assert kept == by_name(before[section], body)


# --- situations: our login against kubectl's own set-cluster/set-credentials/set-context/use-context

POOL = ["caas-example", "cms", "alice@cms", "prod", "admin"]
CAAS = dict(context="cms", cluster="caas-example", user="alice@cms", server="https://caas.example.org:6443")
ARGS = ["get-token", "--user", "alice", "--project", "cms"]


@st.composite
def kubeconfig_file(draw) -> Optional[Dict[str, Any]]:
    """One file of the list: None when it does not exist."""
    if not draw(st.booleans()):
        return None
    data: Dict[str, Any] = {}
    if draw(st.booleans()):
        data.update(apiVersion="v1", kind="Config")
    shared_body = None
    for section, body in kubeconfig.SECTIONS.items():
        names = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=3))
        if not names and draw(st.booleans()):
            continue
        items = []
        for name in names:
            if section == "clusters":
                inner: Dict[str, Any] = {"server": draw(st.sampled_from([CAAS["server"], "https://old.example.org"]))}
                if draw(st.booleans()):
                    inner["tls-server-name"] = "old.example.org"
                if draw(st.booleans()):
                    inner["insecure-skip-tls-verify"] = True
                if draw(st.booleans()):
                    inner["proxy-url"] = "socks5://127.0.0.1:1080"
            elif section == "users":
                inner = draw(st.sampled_from([{"token": "not-ours"}, {"username": "u", "password": "p"},
                                              {"exec": {"command": "other", "args": ["x"], "apiVersion":
                                                        "client.authentication.k8s.io/v1"}}]))
            else:
                inner = {"cluster": draw(st.sampled_from(POOL)), "user": draw(st.sampled_from(POOL))}
                if draw(st.booleans()):
                    inner["namespace"] = draw(st.sampled_from(["web", "08", "y", "="]))
                if shared_body is not None and draw(st.booleans()):
                    inner = shared_body  # the same object: dumped as a YAML anchor and alias
                shared_body = inner
            items.append({"name": name, body: inner})
        data[section] = items
    if draw(st.booleans()):
        data["current-context"] = draw(st.sampled_from(POOL + [""]))
    if draw(st.booleans()):
        data["preferences"] = {"colors": draw(st.booleans())}
    if draw(st.booleans()):
        data["extensions"] = [{"name": "tool", "extension": {"on": "y", "n": [1, "08"]}}]
    if draw(st.booleans()):
        data["x-unknown"] = {"kept": "1:20"}
    return data


situations = st.fixed_dictionaries({
    "files": st.lists(kubeconfig_file(), min_size=1, max_size=3),
    "symlinked": st.lists(st.booleans(), min_size=3, max_size=3),
    "ca": st.booleans(),
    "relative": st.booleans(),  # KUBECONFIG items relative to the working directory
    "padding": st.sampled_from(["", "empty first", "empty last", "repeated"]),
})


def lay_out(root: Path, situation: Dict[str, Any]) -> str:
    """The files under `root` (symlinked ones live in root/dot, relative links); returns KUBECONFIG."""
    (root / "dot").mkdir(parents=True)
    (root / "kube").mkdir()
    items = []
    for index, data in enumerate(situation["files"]):
        listed = root / "kube" / f"config{index}"
        real = listed
        if situation["symlinked"][index]:
            real = root / "dot" / f"config{index}"
            listed.symlink_to(Path("..") / "dot" / real.name)
        if data is not None:
            real.write_bytes(goyaml.dump(data))
        items.append(str(listed.relative_to(root)) if situation.get("relative") else str(listed))
    padding = situation.get("padding", "")
    if padding == "empty first":
        items.insert(0, "")
    elif padding == "empty last":
        items.append("")
    elif padding == "repeated":
        items.append(items[0])
    (root / "ca.pem").write_text("foo")
    return os.pathsep.join(items)


def files_under(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def set_with_kubectl(root: Path, kubeconfig_env: str, ca: bool) -> bool:
    """What `kubectl config` itself does for our login (run in `root`); False if kubectl refused."""
    cluster = ["config", "set-cluster", CAAS["cluster"], f"--server={CAAS['server']}"]
    if ca:
        cluster += [f"--certificate-authority={root / 'ca.pem'}", "--embed-certs=true"]
    if kubectl(root, kubeconfig_env, *cluster, check=False).returncode != 0:
        return False
    kubectl(root, kubeconfig_env, "config", "set-credentials", CAAS["user"], "--exec-command=kubectl-openstack",
            *[f"--exec-arg={a}" for a in ARGS], "--exec-api-version=client.authentication.k8s.io/v1",
            "--exec-interactive-mode=IfAvailable")
    kubectl(root, kubeconfig_env, "config", "set-context", CAAS["context"], f"--cluster={CAAS['cluster']}",
            f"--user={CAAS['user']}", "--namespace=cms")
    kubectl(root, kubeconfig_env, "config", "use-context", CAAS["context"])
    return True


def set_with_upsert(root: Path, kubeconfig_env: str, ca: bool, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Our login's kubeconfig step (run in `root`); False if it refused."""
    with monkeypatch.context() as patch:
        patch.setenv("KUBECONFIG", kubeconfig_env)
        patch.setenv("HOME", str(root / "home"))
        patch.chdir(root)
        try:
            kubeconfig.upsert(kubeconfig.Entry(**CAAS, namespace="cms", certificate_authority_data="Zm9v" if ca else None,
                                               user_body=kubeconfig.exec_user_body("kubectl-openstack", ARGS)),
                              force=True)
        except kubeconfig.KubeconfigError:
            return False
    return True


def comparable(seen: Dict[str, Any]) -> Dict[str, Any]:
    """The merged view minus what our login deliberately does differently: it replaces its own user
    whole (no stale token), where set-credentials keeps the old fields."""
    users = by_name(seen["users"], "user")
    exec_ = (users.pop(CAAS["user"], None) or {}).get("exec") or {}
    return {"current-context": seen["current-context"],
            "clusters": by_name(seen["clusters"], "cluster"), "contexts": by_name(seen["contexts"], "context"),
            "users": users, "our exec": {k: exec_.get(k) for k in ("command", "args", "apiVersion", "interactiveMode",
                                                                      "provideClusterInfo", "env")}}


def per_file(root: Path, kubeconfig_env: str) -> List[Optional[Dict[str, Any]]]:
    """Where each name lives: kubectl's view of each listed file on its own."""
    found = []
    for item in kubeconfig_env.split(os.pathsep):
        path = root / item
        if not item or not path.exists():
            found.append(None)
            continue
        seen = view(root, str(path))
        found.append({"current-context": seen["current-context"], "is link": path.is_symlink(),
                      **{s: sorted(by_name(seen[s], b)) for s, b in kubeconfig.SECTIONS.items()}})
    return found


SHARED_BODY = {"cluster": "prod", "user": "admin", "namespace": "web"}


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(situations)
# a missing file, one that exists without a current-context, one that sets it (issue 9.6)
@example({"files": [None, {"apiVersion": "v1", "kind": "Config"},
                    {"current-context": "prod", "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "x"}}]}],
          "symlinked": [False, False, False], "ca": False, "relative": False, "padding": ""})
# our context shares its body with another through a YAML anchor
@example({"files": [{"contexts": [{"name": "prod", "context": SHARED_BODY}, {"name": "cms", "context": SHARED_BODY}],
                     "current-context": "prod"}], "symlinked": [False, False, False], "ca": True, "relative": True,
          "padding": "repeated"})
# our three stanzas spread over three files, two of them symlinks (one dangling)
@example({"files": [None, {"users": [{"name": "alice@cms", "user": {"token": "t"}}], "current-context": "cms"},
                    {"clusters": [{"name": "caas-example", "cluster": {"server": "https://old.example.org",
                                                                       "tls-server-name": "old"}}],
                     "contexts": [{"name": "cms", "context": {"cluster": "prod", "user": "admin"}}],
                     "current-context": "prod"}],
          "symlinked": [True, True, False], "ca": True, "relative": False, "padding": "empty first"})
# no file exists and KUBECONFIG ends with an empty item: kubectl has no file to write to
@example({"files": [None, None], "symlinked": [False, False, False], "ca": False, "relative": True,
          "padding": "empty last"})
def test_our_login_changes_the_same_files_as_kubectl_config_and_means_the_same(tmp_path_factory, monkeypatch,
                                                                                situation):
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("kubectl")
    env_ours, env_theirs = lay_out(ours, situation), lay_out(theirs, situation)
    before, files_before = view(ours, env_ours), files_under(ours)
    ours_done = set_with_upsert(ours, env_ours, situation["ca"], monkeypatch)
    assert ours_done == set_with_kubectl(theirs, env_theirs, situation["ca"])
    if not ours_done:  # KUBECONFIG left no file to write to: refused, and nothing changed
        assert files_under(ours) == files_before
        return
    ours_seen, theirs_seen = comparable(view(ours, env_ours)), comparable(view(theirs, env_theirs))
    assert ours_seen == theirs_seen
    assert per_file(ours, env_ours) == per_file(theirs, env_theirs)
    # and every stanza neither of us touched still means what it meant
    untouched = comparable(before)
    for section, name in (("clusters", CAAS["cluster"]), ("contexts", CAAS["context"])):
        untouched[section].pop(name, None)
        ours_seen[section].pop(name, None)
    assert {s: ours_seen[s] for s in ("clusters", "contexts", "users")} == \
        {s: untouched[s] for s in ("clusters", "contexts", "users")}
