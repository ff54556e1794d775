#!/usr/bin/env python3
"""What an SMI-S client does with lio-replica's CIM-XML server, through pywbem.

Discovers the array from its registered profile, finds the configuration service and the
volumes, calls AttachReplica with references for every copy type, follows each job by
GetInstance until it ends, follows CIM_AffectedJobElement, lists relationships by References
from a volume, fractures, resyncs and detaches through ModifySynchronization, and compares
every refusal with the same call made over the daemon's JSON-RPC socket (through the CLI).

Usage: smis_client.py URL USER PASSWORD CA_FILE SOCKET LIO_REPLICA_BINARY
Prints one PASS/FAIL line per check and closes with "N passed, N failed".
"""

import http.client
import json
import ssl
import subprocess
import sys
import time
import urllib.parse

import pywbem
from pywbem import CIMError, Uint16

NS = "root/cimv2/storage/iscsitarget"
URL, USER, PASSWORD, CA, SOCKET, BIN = sys.argv[1:7]
PASSED = 0
FAILED = 0


def check(ok, what):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"PASS: {what}", flush=True)
    else:
        FAILED += 1
        print(f"FAIL: {what}", flush=True)
    return ok


def connect(user=USER, password=PASSWORD):
    return pywbem.WBEMConnection(
        URL, (user, password), default_namespace=NS, ca_certs=CA, timeout=60
    )


def cim_status(fn):
    """The CIM status code a call fails with (None if it does not fail)."""
    try:
        fn()
    except CIMError as e:
        return e.status_code
    return None


def json_rpc(*args):
    """The same call over the daemon's Unix socket: (exit status, JSON result or stderr)."""
    p = subprocess.run(
        [BIN, "--socket", SOCKET, "--json", *args], capture_output=True, text=True
    )
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, p.stderr


conn = connect()

# --- discovery, as libstoragemgmt's SMI-S plugin does it
profiles = conn.EnumerateInstances("CIM_RegisteredProfile", namespace="interop")
names = sorted(p["RegisteredName"] for p in profiles)
check(names == ["Array", "Block Services", "Replication Services"], f"registered profiles {names}")
array = [p for p in profiles if p["RegisteredName"] == "Array"][0]
check(array["RegisteredOrganization"] == 11, "the Array profile is SNIA's (11)")
systems = conn.Associators(
    array.path, AssocClass="CIM_ElementConformsToProfile", ResultClass="CIM_ComputerSystem"
)
check(len(systems) == 1 and systems[0].path.namespace == NS,
      f"the Array profile leads to one system in {NS}: {[str(s.path) for s in systems]}")
system = systems[0]
pools = conn.Associators(system.path, AssocClass="CIM_HostedStoragePool", ResultClass="CIM_StoragePool")
check(len(pools) == 1, "the system hosts one storage pool")
pool_volumes = conn.AssociatorNames(
    pools[0].path, AssocClass="CIM_AllocatedFromStoragePool", ResultClass="CIM_StorageVolume"
)

services = conn.EnumerateInstanceNames("CIM_StorageConfigurationService")
check(len(services) == 1 and services[0].classname == "LIO_StorageConfigurationService",
      f"one configuration service: {[str(s) for s in services]}")
service = services[0]
hosted = conn.AssociatorNames(system.path, AssocClass="CIM_HostedService")
check(any(h.classname == service.classname and h.keybindings == service.keybindings for h in hosted),
      "the system hosts the service (CIM_HostedService)")
caps = conn.Associators(service, AssocClass="CIM_ElementCapabilities")
check(len(caps) == 1 and 10 in caps[0]["SupportedAsynchronousActions"]
      and list(caps[0]["SupportedCopyTypes"]) == [2, 3, 4, 5],
      "capabilities: Replica Attachment (10), copy types 2-5")

cls = conn.GetClass("LIO_StorageConfigurationService", LocalOnly=False, IncludeQualifiers=True)
attach = cls.methods.get("AttachReplica")
check(attach is not None
      and attach.parameters["SourceElement"].type == "reference"
      and attach.parameters["CopyType"].type == "uint16"
      and "Out" in attach.parameters["Job"].qualifiers,
      "GetClass shows AttachReplica's parameters")
check(all("Key" in cls.properties[k].qualifiers
          for k in ["SystemCreationClassName", "SystemName", "CreationClassName", "Name"]),
      "GetClass marks the service's keys")

volumes = {v["ElementName"]: v for v in conn.EnumerateInstances("CIM_StorageVolume")}
check(sorted(volumes) == ["disk0", "disk1", "disk2", "disk3"], f"volumes {sorted(volumes)}")
check(len(pool_volumes) == 4, "the pool holds the four volumes (CIM_AllocatedFromStoragePool)")
v0 = volumes["disk0"]
check(v0["BlockSize"] * v0["NumberOfBlocks"] == 64 << 20, "disk0: 64 MiB in BlockSize blocks")
check(len(v0["Name"]) == 32 and v0["Name"].startswith("6001405") and v0["NameFormat"] == 9,
      f"disk0's Name is an NAA identifier: {v0['Name']}")
got = conn.GetInstance(v0.path)
check(got["DeviceID"] == "block/disk0", "GetInstance of a volume")


def vol(name):
    return volumes[name].path


def wait_job(job_path, what):
    """Follows the job by GetInstance until it ends; returns its last instance."""
    for _ in range(600):
        job = conn.GetInstance(job_path)
        if job["JobState"] in (7, 8, 9, 10):
            return job
        time.sleep(0.1)
    check(False, f"{what}: the job ended")
    return job


def relationships_of(name):
    return conn.References(vol(name), ResultClass="CIM_StorageSynchronized")


def modify(sync_path, operation, **extra):
    return conn.InvokeMethod("ModifySynchronization", service, Operation=Uint16(operation),
                             Synchronization=sync_path, **extra)


def attach_and_follow(src, tgt, copy_type, what):
    rv, out = conn.InvokeMethod("AttachReplica", service, SourceElement=vol(src),
                                TargetElement=vol(tgt), CopyType=Uint16(copy_type))
    job = None
    if rv == 4096:
        check(out["Job"] is not None and out["Job"].classname == "LIO_ConcreteJob",
              f"{what}: 4096 with a Job reference")
        job = wait_job(out["Job"], what)
        check(job["JobState"] == 7 and list(job["OperationalStatus"]) == [2, 17]
              and job["PercentComplete"] == 100,
              f"{what}: job Completed, OperationalStatus {{2, 17}}, 100 %")
        affected = conn.AssociatorNames(out["Job"], AssocClass="CIM_AffectedJobElement")
        check(sorted(a["DeviceID"] for a in affected) == sorted([f"block/{src}", f"block/{tgt}"]),
              f"{what}: CIM_AffectedJobElement names both volumes")
        rv2, out2 = conn.InvokeMethod("GetError", out["Job"])
        check(rv2 == 0 and out2["Error"] is None, f"{what}: GetError of a completed job: none")
    else:
        check(rv == 0, f"{what}: AttachReplica returned {rv} ({out.get('Description')})")
    return rv, job


# --- Sync (3): mirror, fracture, resync, detach
rv, _ = attach_and_follow("disk0", "disk1", 3, "Sync disk0 -> disk1")
rels = relationships_of("disk0")
check(len(rels) == 1 and rels[0]["CopyType"] == 3 and rels[0]["SyncState"] == 6
      and rels[0]["SyncedElement"]["DeviceID"] == "block/disk1",
      "References from disk0: one Sync relationship, Synchronized")
sync = rels[0].path
rv, out = modify(sync, 3)
check(rv == 0 and conn.GetInstance(sync)["SyncState"] == 13, f"Fracture: {rv}, Fractured")
rv, out = modify(sync, 4)
if rv == 4096:
    wait_job(out["Job"], "Resync")
check(rv in (0, 4096) and conn.GetInstance(sync)["SyncState"] == 6, f"Resync: {rv}, Synchronized again")
rv, out = modify(sync, 2)
check(rv == 0 and relationships_of("disk0") == [], f"Detach: {rv}, no relationship left")

# --- Async (2): the 72 MiB disk2 has the room for the raid1 metadata
rv, _ = attach_and_follow("disk0", "disk2", 2, "Async disk0 -> disk2")
rels = relationships_of("disk2")
check(len(rels) == 1 and rels[0]["CopyType"] == 2 and rels[0]["Mode"] == 3,
      "References from the target: one Async relationship, Mode Asynchronous")
rv, out = modify(rels[0].path, 2)
check(rv == 0, f"Detach the Async relationship: {rv}")

# --- UnSyncAssoc (4): a snapshot exists when the call returns
rv, _ = attach_and_follow("disk0", "disk3", 4, "UnSyncAssoc disk0 -> disk3")
rels = relationships_of("disk3")
check(len(rels) == 1 and rels[0]["CopyType"] == 4 and rels[0]["SyncType"] == 7,
      "a snapshot relationship (SyncType 7)")
rv, out = modify(rels[0].path, 2)
check(rv == 0, f"Detach the snapshot: {rv}")

# --- UnSyncUnAssoc (5): a full copy, followed to its end
rv, job = attach_and_follow("disk0", "disk3", 5, "UnSyncUnAssoc disk0 -> disk3")
jobs = conn.EnumerateInstances("CIM_ConcreteJob")
check(len(jobs) >= 4 and all(j.classname == "LIO_ConcreteJob" for j in jobs),
      f"EnumerateInstances of CIM_ConcreteJob finds the jobs ({len(jobs)})")
if job is not None:
    rv, _ = conn.InvokeMethod("RequestStateChange", job.path, RequestedState=Uint16(4))
    code, r = json_rpc("job", job["InstanceID"].split(":", 1)[1], "--terminate")
    check(rv != 0 and isinstance(r, dict) and rv == r.get("ReturnValue"),
          f"RequestStateChange on an ended job: {rv}, as over JSON-RPC ({r})")
for r in relationships_of("disk3"):
    modify(r.path, 2)

# --- refusals: the same return value and reason as JSON-RPC
def missing(name):
    p = volumes["disk0"].path.copy()
    p["DeviceID"] = f"block/{name}"
    return p


refusals = [
    ("unknown source", missing("nosuch"), vol("disk1"), 3, ["block/nosuch", "block/disk1"]),
    ("source = target", vol("disk0"), vol("disk0"), 3, ["block/disk0", "block/disk0"]),
    ("vendor copy type", vol("disk0"), vol("disk1"), 40000, ["block/disk0", "block/disk1"]),
    ("Async target without room", vol("disk0"), vol("disk1"), 2, ["block/disk0", "block/disk1"]),
    ("exported target", vol("disk1"), vol("disk0"), 3, ["block/disk1", "block/disk0"]),
]
for what, s, t, ct, cli in refusals:
    rv, out = conn.InvokeMethod("AttachReplica", service, SourceElement=s, TargetElement=t,
                                CopyType=Uint16(ct))
    code, r = json_rpc("attach", *cli, "--copy-type", str(ct))
    same = isinstance(r, dict) and r.get("ReturnValue") == rv and r.get("Description") == out["Description"]
    check(rv not in (0, 4096) and out["Description"] and same,
          f"refused, {what}: {rv} {out['Description']!r} (JSON-RPC: {r})")

rv, _ = attach_and_follow("disk0", "disk1", 3, "Sync again, for the in-use refusal")
rv6, out = conn.InvokeMethod("AttachReplica", service, SourceElement=vol("disk0"),
                             TargetElement=vol("disk1"), CopyType=Uint16(3))
code, r = json_rpc("attach", "block/disk0", "block/disk1", "--copy-type", "3")
check(rv6 not in (0, 4096) and isinstance(r, dict) and r.get("ReturnValue") == rv6
      and r.get("Description") == out["Description"],
      f"refused, target already in a relationship: {rv6} {out['Description']!r}")
sync = relationships_of("disk0")[0].path
rv, out = modify(sync, 99)
code, r = json_rpc("detach", "disk0/disk1")  # (a real call, made after the comparison below)
check(rv not in (0, 4096) and out["Description"], f"ModifySynchronization 99 refused: {rv} {out['Description']!r}")
check(code == 0, "Detach over JSON-RPC ends the relationship")
gone = relationships_of("disk0")
check(gone == [], "the relationship is gone for CIM too")
check(cim_status(lambda: conn.GetInstance(sync)) == 6, "GetInstance of the detached relationship: NOT_FOUND (6)")
rv, out = modify(sync, 2)
check(rv == 5 and "no relationship" in out["Description"],
      f"ModifySynchronization of the detached relationship: {rv} {out['Description']!r}")

# --- CIM errors (DSP0200 status codes)
check(cim_status(lambda: conn.GetInstance(missing("nosuch"))) == 6, "GetInstance of a missing volume: NOT_FOUND (6)")
check(cim_status(lambda: conn.EnumerateInstances("CIM_NoSuchClass")) == 5, "unknown class: INVALID_CLASS (5)")
check(cim_status(lambda: conn.EnumerateInstances("CIM_StorageVolume", namespace="root/nope")) == 3,
      "unknown namespace: INVALID_NAMESPACE (3)")
check(cim_status(lambda: conn.DeleteInstance(vol("disk3"))) == 7, "DeleteInstance: NOT_SUPPORTED (7)")
check(cim_status(lambda: conn.InvokeMethod("Frobnicate", service)) == 17, "unknown method: METHOD_NOT_FOUND (17)")
check(cim_status(lambda: conn.InvokeMethod("AttachReplica", service, SourceElement=vol("disk0"),
                                           TargetElement=vol("disk1"), CopyType=Uint16(3),
                                           Colour="blue")) == 4,
      "unknown parameter: INVALID_PARAMETER (4)")

# --- wrong credentials: 401, after a delay
t0 = time.monotonic()
try:
    connect(password="wrong").EnumerateInstanceNames("CIM_StorageVolume")
    check(False, "wrong password refused")
except pywbem.AuthError:
    check(time.monotonic() - t0 >= 1.0, "wrong password: 401, answered after a delay")
try:
    connect(user="nobody").EnumerateInstanceNames("CIM_StorageVolume")
    check(False, "unknown user refused")
except pywbem.AuthError:
    check(True, "unknown user: 401")

# --- hostile bodies: an HTTP 400 with DSP0200's CIMError header, and the server keeps serving
u = urllib.parse.urlsplit(URL)
ctx = ssl.create_default_context(cafile=CA)
auth = "Basic " + __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def raw_post(body):
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    c.request("POST", "/cimom", body=body, headers={
        "Authorization": auth, "CIMOperation": "MethodCall", "Content-Type": "application/xml"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r.getheader("CIMError")


bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        '<CIM>&lol2;</CIM>')
for what, body, want in [
    ("malformed XML", b"<CIM><MESSAGE ID='1'", "request-not-well-formed"),
    ("an entity bomb", bomb.encode(), "request-not-well-formed"),
    ("nesting 10,000 deep", b"<a>" * 10000 + b"</a>" * 10000, "request-not-well-formed"),
    ("XML that is not CIM", b"<?xml version='1.0'?><CIM><NOPE/></CIM>", "request-not-valid"),
]:
    status, cim_error = raw_post(body)
    check(status == 400 and cim_error == want, f"{what}: HTTP {status}, CIMError {cim_error}")
check(len(conn.EnumerateInstanceNames("CIM_StorageVolume")) == 4, "the server still answers")

print(f"{PASSED} passed, {FAILED} failed")
sys.exit(1 if FAILED else 0)
