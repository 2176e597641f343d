#!/usr/bin/env python3
# check_deploy.py -- validates deploy/: every Kubernetes manifest parses and hangs together, every flag a
# container, systemd unit or the Dockerfile passes to a corral binary exists in that binary's --help.
#
# Run by ctest (tests/integration/tests.cmake) as
#   check_deploy.py manifests SRC_DIR BIN_DIR     YAML, cross references, flags, unit hardening
#   check_deploy.py docker SRC_DIR BIN_DIR        builds deploy/Dockerfile and runs --help in the image;
#                                                 exits 77 (ctest SKIP_RETURN_CODE) when there is no docker
# `kubectl apply --dry-run=client` is not available here, so this is the check that the files are
# usable: what it cannot see (admission, a real cluster) docs/deploy.md says.
# SPDX-License-Identifier: Apache-2.0
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

SKIP = 77
BINARIES = ("corral-aggregator", "corral-agent", "corralctl")
errors = []


def fail(msg):
    errors.append(msg)


def help_flags(bin_dir, name):
    """The flag names (without --) that `name --help` lists."""
    out = subprocess.run([os.path.join(bin_dir, name), "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9][a-z0-9-]*)", text, re.M))
    if not flags:
        raise SystemExit(f"{name} --help listed no flags:\n{text}")
    return flags


def check_flags(where, binary, args, flags):
    """Every --flag in args must be one `binary --help` lists; returns how many were checked."""
    n = 0
    for a in args:
        if not a.startswith("--"):
            continue
        name = a[2:].split("=", 1)[0]
        n += 1
        if name not in flags.get(binary, set()):
            fail(f"{where}: {binary} has no flag --{name}")
    return n


def load_manifests(kdir):
    docs = []
    for fn in sorted(os.listdir(kdir)):
        if not fn.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(kdir, fn)) as f:
            for i, d in enumerate(yaml.safe_load_all(f)):
                if d is None:
                    continue
                for key in ("apiVersion", "kind"):
                    if key not in d:
                        fail(f"{fn} document {i}: no {key}")
                if d.get("kind") != "Kustomization" and not d.get("metadata", {}).get("name"):
                    fail(f"{fn} document {i}: no metadata.name")
                docs.append((fn, d))
    return docs


def check_kustomization(kdir, docs):
    kust = [d for fn, d in docs if d.get("kind") == "Kustomization"]
    if len(kust) != 1:
        return fail(f"want one kustomization.yaml, found {len(kust)}")
    listed = set(kust[0].get("resources", []))
    present = {fn for fn, d in docs if d.get("kind") != "Kustomization"}
    for r in listed - present:
        fail(f"kustomization lists {r}, which is missing or empty")
    for r in present - listed:
        fail(f"{r} is not in kustomization.yaml resources")


def pod_specs(docs):
    for fn, d in docs:
        if d.get("kind") in ("DaemonSet", "StatefulSet", "Deployment"):
            yield fn, d, d["spec"]["template"]["spec"]


def corral_binary(c):
    cmd = c.get("command") or []
    name = os.path.basename(cmd[0]) if cmd else ""
    return name if name in BINARIES else None


def check_env_refs(where, c):
    defined = {e["name"] for e in c.get("env", [])}
    for a in c.get("args", []) + c.get("command", []):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            if ref not in defined:
                fail(f"{where}: $({ref}) is not defined in env")


def check_container(where, spec, c):
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    claims = set()
    for fn_d in spec.get("_claims", []):
        claims.add(fn_d)
    for m in c.get("volumeMounts", []):
        if m["name"] not in vols and m["name"] not in claims:
            fail(f"{where}: volumeMount {m['name']} has no volume")
        hp = vols.get(m["name"], {}).get("hostPath")
        if hp and hp["path"] in ("/sys/fs/cgroup", "/proc", "/var/log") and not m.get("readOnly"):
            fail(f"{where}: hostPath {hp['path']} must be mounted readOnly")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: securityContext.readOnlyRootFilesystem must be true")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{where}: securityContext.capabilities.drop must include ALL")
    if sc.get("privileged"):
        fail(f"{where}: must not be privileged")
    if "resources" not in c or "requests" not in c["resources"] or "limits" not in c["resources"]:
        fail(f"{where}: needs resources.requests and resources.limits")
    check_env_refs(where, c)


def check_probes(where, c):
    ports = {p["containerPort"] for p in c.get("ports", [])} | {p.get("name") for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            fail(f"{where}: no {probe}")
            continue
        get = p.get("httpGet", {})
        if get.get("path") != "/healthz":
            fail(f"{where}: {probe} must GET /healthz")
        if get.get("port") not in ports:
            fail(f"{where}: {probe} port {get.get('port')} is not a container port")


def listen_port(args, flag):
    for a in args:
        if a.startswith(f"--{flag}="):
            return int(a.rsplit(":", 1)[1])
    return None


def check_workloads(docs, flags):
    nflags = 0
    ports_by_app = {}
    for fn, d, spec in pod_specs(docs):
        spec["_claims"] = [t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])]
        for c in spec["containers"]:
            where = f"{fn}: {d['kind']}/{d['metadata']['name']} container {c['name']}"
            check_container(where, spec, c)
            binary = corral_binary(c)
            if not binary:
                continue
            nflags += check_flags(where, binary, c.get("args", []), flags)
            check_probes(where, c)
            # the ports the flags open are the ports the pod declares
            declared = {p["containerPort"] for p in c.get("ports", [])}
            for flag in ("listen", "dns-listen"):
                port = listen_port(c.get("args", []), flag)
                if port is not None and port not in declared:
                    fail(f"{where}: --{flag} port {port} is not a containerPort")
            app = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
            ports_by_app.setdefault(app, set()).update(p.get("name") for p in c.get("ports", []))
            ports_by_app[app].update(p["containerPort"] for p in c.get("ports", []))
        if d["kind"] == "DaemonSet":
            tol = spec.get("tolerations", [])
            if not any(t.get("operator") == "Exists" and "key" not in t for t in tol):
                fail(f"{fn}: the DaemonSet must tolerate every taint (operator: Exists, no key)")
            env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
            node = env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if node != "spec.nodeName":
                fail(f"{fn}: NODE_NAME must come from the downward API (spec.nodeName)")
    return nflags, ports_by_app


def check_services(docs, ports_by_app):
    for fn, d in docs:
        if d.get("kind") != "Service":
            continue
        app = d["spec"].get("selector", {}).get("app.kubernetes.io/name")
        if app not in ports_by_app:
            fail(f"{fn}: Service {d['metadata']['name']} selects {app}, which no workload is")
            continue
        for p in d["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in ports_by_app[app]:
                fail(f"{fn}: Service port {p['name']} targets {p.get('targetPort')}, not a container port")


def check_kinds(docs):
    kinds = {d.get("kind") for fn, d in docs}
    for k in ("DaemonSet", "StatefulSet", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
              "Secret", "Kustomization"):
        if k not in kinds:
            fail(f"deploy/kubernetes has no {k}")
    for fn, d in docs:
        if d.get("kind") == "StatefulSet" and not d["spec"].get("volumeClaimTemplates"):
            fail(f"{fn}: the aggregator StatefulSet needs a volumeClaimTemplate")
        if d.get("kind") == "ClusterRole":
            for r in d.get("rules", []):
                if set(r.get("verbs", [])) - {"get", "list", "watch"}:
                    fail(f"{fn}: ClusterRole {d['metadata']['name']} may only read")
        if d.get("kind") == "ClusterRole" and d["metadata"]["name"] == "corral-aggregator":
            check_kube_source_rbac(fn, d)


def check_kube_source_rbac(fn, role):
    """The aggregator lists (and may watch) Services and discovery.k8s.io/v1 EndpointSlices (ag_kube.c)."""
    for group, res in (("", "services"), ("discovery.k8s.io", "endpointslices")):
        if not any(group in r.get("apiGroups", []) and res in r.get("resources", []) and
                   {"list", "watch"} <= set(r.get("verbs", [])) for r in role.get("rules", [])):
            fail(f"{fn}: ClusterRole corral-aggregator needs list and watch on {group or 'core'}/{res}")


def unit_exec_start(path):
    """The ExecStart of a unit file as argv (continuation lines joined), and its [Service] keys."""
    text = open(path).read().replace("\\\n", " ")
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return shlex.split(keys["ExecStart"][0]), keys


def systemd_verify(path, exe, bin_dir):
    """systemd-analyze verify on a copy whose ExecStart points into the build tree: any complaint (an
    unknown key, a bad value) fails. Skipped where systemd-analyze is missing."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        print(f"note: no systemd-analyze, {os.path.basename(path)} only parsed here")
        return
    tmp = tempfile.mkdtemp(prefix="corral-units-")
    try:
        copy = os.path.join(tmp, os.path.basename(path))
        with open(path) as f, open(copy, "w") as o:
            o.write(f.read().replace(os.path.dirname(exe) + "/", bin_dir + "/"))
        out = subprocess.run([tool, "verify", "--man=no", copy], capture_output=True, text=True, timeout=60)
        text = (out.stdout + out.stderr).strip()
        if out.returncode or text:
            fail(f"{os.path.basename(path)}: systemd-analyze verify: {text}")
    finally:
        shutil.rmtree(tmp)


def check_units(sdir, flags, bin_dir):
    n = 0
    want = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": None, "PrivateTmp": "yes"}
    units = sorted(f for f in os.listdir(sdir) if f.endswith(".service"))
    if len(units) < 2:
        fail("deploy/systemd needs corral-aggregator.service and corral-agent.service")
    for u in units:
        argv, keys = unit_exec_start(os.path.join(sdir, u))
        binary = os.path.basename(argv[0])
        if binary not in BINARIES:
            fail(f"{u}: ExecStart runs {argv[0]}, not a corral binary")
            continue
        n += check_flags(u, binary, argv[1:], flags)
        for k, v in want.items():
            if k not in keys or (v and v not in keys[k]):
                fail(f"{u}: needs {k}={v or '...'}")
        if "DynamicUser" not in keys and "User" not in keys:
            fail(f"{u}: needs DynamicUser= or User=")
        systemd_verify(os.path.join(sdir, u), argv[0], os.path.abspath(bin_dir))
        state = [a.split("=", 1)[1] for a in argv if a.startswith(("--state-dir=", "--data-dir="))]
        writable = keys.get("ReadWritePaths", []) + ["/var/lib/" + s for s in keys.get("StateDirectory", [])]
        for s in state:
            if not any(s == w or s.startswith(w + "/") for ws in writable for w in ws.split()):
                fail(f"{u}: {s} is not writable under ProtectSystem=strict")
    return n


def check_dockerfile(path, flags):
    text = open(path).read()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if len(stages) < 2 or not stages[-1].startswith("debian:12-slim"):
        fail(f"Dockerfile: want a multi-stage build ending in debian:12-slim, have {stages}")
    if not re.search(r"^FROM debian:12 AS build", text, re.M):
        fail("Dockerfile: the build stage must be debian:12")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        fail("Dockerfile: the image must end with a non-root USER")
    src = os.path.dirname(os.path.dirname(path))
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        for s in m.group(1).split()[:-1]:
            if not os.path.exists(os.path.join(src, s)):
                fail(f"Dockerfile: COPY {s}: no such path in the source tree")
    cmd = re.search(r"^CMD\s+(\[.*\])", text, re.M)
    return check_flags("Dockerfile CMD", "corral-aggregator", yaml.safe_load(cmd.group(1)) if cmd else [], flags)


def manifests(src, bin_dir):
    flags = {b: help_flags(bin_dir, b) for b in BINARIES if os.path.exists(os.path.join(bin_dir, b))}
    for b in ("corral-aggregator", "corral-agent"):
        if b not in flags:
            raise SystemExit(f"{b} is not built in {bin_dir}")
    kdir = os.path.join(src, "deploy", "kubernetes")
    docs = load_manifests(kdir)
    check_kustomization(kdir, docs)
    check_kinds(docs)
    n, ports = check_workloads(docs, flags)
    check_services(docs, ports)
    n += check_units(os.path.join(src, "deploy", "systemd"), flags, bin_dir)
    n += check_dockerfile(os.path.join(src, "deploy", "Dockerfile"), flags)
    print(f"{len(docs)} YAML documents, {n} flags checked against --help")
    if n < 20:
        fail(f"only {n} flags found: the argument extraction is broken")


def docker(src):
    exe = shutil.which("docker")
    if not exe:
        print("SKIP: no docker binary: the Dockerfile build is not tested here")
        return SKIP
    if subprocess.run([exe, "info"], capture_output=True, timeout=30).returncode != 0:
        print("SKIP: docker cannot reach a daemon (docker info failed): the Dockerfile build is not tested here")
        return SKIP
    tag = f"corral-deploy-test:{os.getpid()}"
    try:
        subprocess.run([exe, "build", "-q", "-f", "deploy/Dockerfile", "-t", tag, "."], cwd=src, check=True,
                       timeout=1500)
        for b in ("corral-aggregator", "corral-agent"):
            out = subprocess.run([exe, "run", "--rm", "--entrypoint", f"/usr/local/bin/{b}", tag, "--help"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0 or "--listen" not in out.stdout + out.stderr:
                fail(f"image: {b} --help failed: {out.stdout}{out.stderr}")
        uid = subprocess.run([exe, "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
        if uid in ("", "0"):
            fail(f"image runs as uid {uid!r}, want non-root")
    finally:
        subprocess.run([exe, "rmi", "-f", tag], capture_output=True, timeout=60)
    return 0


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("manifests", "docker"):
        raise SystemExit(__doc__ or "usage: check_deploy.py manifests|docker SRC_DIR BIN_DIR")
    mode, src, bin_dir = sys.argv[1:]
    if mode == "docker" and docker(src) == SKIP:
        return SKIP
    if mode == "manifests":
        manifests(src, bin_dir)
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
