"""Every answer the SDK received, decoded into the SDK's own model of it: what lands in a model's
`additional_properties` (a field the model does not know, at its top level), what the model
drops (a field it does not know inside a flattened `properties`: the SDK's deserializer keeps
no trace of those), a value the model reads as something else, what callers read and did not
get, and error or status bodies the SDK cannot act on."""

import json
from datetime import datetime

from azure.mgmt.core.exceptions import ARMErrorFormat

# What callers read from each model (flexdisk's and cloud-provider-azure's disk code, and a
# Python user following the SDK's samples): `a.b` an attribute path, `a[].b` each item's.
NEEDS = {
    "Disk": ["id", "name", "type", "location", "sku.name", "disk_size_gb", "disk_state",
             "provisioning_state", "unique_id", "time_created", "creation_data.create_option"],
    "Snapshot": ["id", "name", "location", "provisioning_state", "disk_size_gb",
                 "creation_data.source_resource_id"],
    "VirtualMachine": ["id", "name", "location", "provisioning_state", "vm_id",
                       "hardware_profile.vm_size", "storage_profile.data_disks",
                       "storage_profile.data_disks[].lun", "storage_profile.data_disks[].name",
                       "storage_profile.data_disks[].managed_disk.id"],
    "VirtualMachineScaleSetVM": ["id", "name", "instance_id", "location", "provisioning_state",
                                 "os_profile.computer_name", "storage_profile.data_disks",
                                 "storage_profile.data_disks[].lun",
                                 "storage_profile.data_disks[].managed_disk.id"],
    "VirtualMachineScaleSet": ["id", "name", "location", "sku.capacity", "orchestration_mode",
                               "provisioning_state"],
    "StorageProfile": ["data_disks", "data_disks[].lun", "data_disks[].managed_disk.id"],
}
# List answers: the list model and its items' model.
LISTS = {"disks": ("DiskList", "Disk"), "snapshots": ("SnapshotList", "Snapshot"),
         "virtualmachinescalesets": ("VirtualMachineScaleSetListResult", "VirtualMachineScaleSet"),
         "virtualmachines": ("VirtualMachineListResult", "VirtualMachine"),
         "scalesetvms": ("VirtualMachineScaleSetVMListResult", "VirtualMachineScaleSetVM")}
# The status resource as azure-core's pollers read it (`status`, and `error` once Failed:
# azure/core/polling/base_polling.py); the SDK has no model for it.
STATUSES = {"InProgress", "Succeeded", "Failed", "Canceled"}


class Deserializers:
    """The SDK's deserializers of the api-versions the client speaks: disks and snapshots have
    theirs, VMs and scale sets theirs (one per operation group in a multi-api package)."""

    def __init__(self, client):
        self.disks = client.disks._deserialize
        self.compute = client.virtual_machines._deserialize

    def of(self, model):
        return self.disks if model in ("Disk", "DiskList", "Snapshot", "SnapshotList") else self.compute


def resource_model(resource_id):
    """The model of a resource by the type its ID ends in."""
    segs = [s.lower() for s in resource_id.strip("/").split("/")]
    types = segs[-2::-2]
    if not types:
        return None
    if types[0] == "virtualmachines" and len(types) > 1 and types[1] == "virtualmachinescalesets":
        return "VirtualMachineScaleSetVM"
    return {"disks": "Disk", "snapshots": "Snapshot", "virtualmachines": "VirtualMachine",
            "virtualmachinescalesets": "VirtualMachineScaleSet"}.get(types[0])


def classify(ex, body):
    """(what the answer is, model name): "error", "status", "list" or "resource"."""
    if ex.status >= 400:
        return "error", None
    segs = [s.lower() for s in ex.path.strip("/").split("/")]
    last, before = segs[-1], segs[-2] if len(segs) > 1 else ""
    if before in ("operations", "diskoperations"):
        if ex.query.get("monitor") != "true":
            return "status", None
        # The Location form's final answer: the operation's result.
        if isinstance(body, dict) and "dataDisks" in body:
            return "resource", "StorageProfile"
        return "resource", resource_model(body.get("id", "")) if isinstance(body, dict) else None
    if last == "attachdetachdatadisks":
        return "resource", "StorageProfile"
    if last == "virtualmachines" and "virtualmachinescalesets" in segs:
        return "list", "scalesetvms"
    if last in LISTS:
        return "list", last
    return "resource", resource_model(ex.path)


def check_all(deserializers, exchanges):
    """(problems, how many answers were checked as what: model name, "status", "error")."""
    problems, checked = set(), {}
    for ex in exchanges:
        where = "%s %s -> %d" % (ex.method, ex.path, ex.status)
        what, found = check_one(deserializers, ex)
        checked[what] = checked.get(what, 0) + 1
        problems.update(where + ": " + p for p in found)
    return sorted(problems), checked


def check_one(deserializers, ex):
    if not ex.body.strip():
        # A finished operation's Location answers 200 or 204 without a body when the operation
        # has no result (a DELETE: the RPC's async-api-reference); a read of a resource does not.
        empty_ok = ex.status != 200 or ex.method != "GET" or ex.query.get("monitor") == "true"
        return "empty", [] if empty_ok else ["an empty 200 answer to a GET"]
    try:
        body = json.loads(ex.body)
    except ValueError:
        return "not JSON", ["not JSON: %.80r" % ex.body]
    kind, model = classify(ex, body)
    if kind == "error":
        return "error", check_error(body)
    if kind == "status":
        return "status", check_status(body)
    if kind == "list":
        list_model, item_model = LISTS[model]
        return list_model, round_trip(deserializers.of(list_model), list_model, body, item_model)
    if model is None:
        return "unchecked", []
    return model, round_trip(deserializers.of(model), model, body, None)


def check_error(body):
    try:
        err = ARMErrorFormat(body)
    except (KeyError, TypeError, AttributeError) as e:
        return ["an error body ARMErrorFormat cannot read (%s)" % e]
    return [] if err.code and err.message else ["an error without code or message"]


def check_status(body):
    status = body.get("status")
    if status not in STATUSES:
        return ["status %r is none of %s" % (status, sorted(STATUSES))]
    if status == "Failed":
        return check_error(body) if body.get("error") else ["a Failed status without `error`"]
    return []


def round_trip(deserialize, model, body, item_model):
    """Decode with the SDK's deserializer, encode again with the model's own serializer (read-only
    fields kept): whatever the answer has and the second lacks, the SDK does not know."""
    try:
        obj = deserialize(model, body)
    except Exception as e:  # the SDK's DeserializationError and whatever it wraps
        return ["the SDK's %s cannot decode it: %s" % (model, e)]
    problems = ["%s: unknown to the SDK's model (additional_properties %s)" % (at or "(body)", sorted(extra))
                for at, extra in additional_properties(obj, "")]
    back = obj.serialize(keep_readonly=True)
    problems += diff(body, back, "")
    items = getattr(obj, "value", None) if item_model else [obj]
    for item in items or []:
        problems += ["missing %s" % need for need in NEEDS.get(item_model or model, []) if not has(item, need)]
    return problems


def additional_properties(obj, at):
    """(path, keys) of every model in the tree whose deserializer put fields it did not know into
    `additional_properties`."""
    if isinstance(obj, list):
        for item in obj:
            yield from additional_properties(item, at + "[]")
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from additional_properties(v, at + "{}")
    elif hasattr(obj, "_attribute_map"):
        if getattr(obj, "additional_properties", None):
            yield at, set(obj.additional_properties)
        for attr in obj._attribute_map:
            if attr != "additional_properties":
                yield from additional_properties(getattr(obj, attr, None), at + "." + attr)


def diff(raw, back, at):
    if isinstance(raw, dict):
        if not isinstance(back, dict):
            return ["%s: the SDK reads it as %s" % (at or "(body)", type(back).__name__)]
        out = []
        for k, v in raw.items():
            if v is None:
                continue
            if k not in back:
                out.append("%s.%s: unknown to the SDK's model" % (at, k))
            else:
                out += diff(v, back[k], at + "." + k)
        return out
    if isinstance(raw, list):
        if not isinstance(back, list) or len(back) != len(raw):
            return ["%s: the SDK reads the list differently" % (at or "(body)")]
        return [p for r, b in zip(raw, back) for p in diff(r, b, at + "[]")]
    if raw == back and type(raw) is type(back) or isinstance(raw, str) and same_instant(raw, back):
        return []
    return ["%s: %r becomes %r in the SDK's model" % (at or "(body)", raw, back)]


def same_instant(a, b):
    """The SDK writes times back in its own ISO 8601 form."""
    try:
        return isinstance(b, str) and parse_time(a) == parse_time(b)
    except ValueError:
        return False


def parse_time(s):
    s = s.replace("Z", "+00:00")
    # Python before 3.11 takes at most 6 fractional digits; ARM writes 7.
    if "." in s:
        head, rest = s.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        s = head + "." + (rest[:digits] + "000000")[:6] + rest[digits:]
    return datetime.fromisoformat(s)


def has(obj, path):
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = getattr(obj, head[:-2], None)
        return items is not None and all(has(i, rest) for i in items)
    value = getattr(obj, head, None)
    return value is not None and (not rest or has(value, rest))


def self_test(deserializers, exchange):
    """The checks find what they are for, in answers made wrong on purpose."""
    disk = {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d", "name": "d",
            "type": "Microsoft.Compute/disks", "location": "westus2", "sku": {"name": "Premium_LRS"},
            "properties": {"diskSizeGB": 4, "diskState": "Unattached", "provisioningState": "Succeeded",
                           "uniqueId": "u", "timeCreated": "2025-01-02T03:04:05.1234567+00:00",
                           "creationData": {"createOption": "Empty"}}}
    path = disk["id"]

    def found(body, path=path, status=200):
        return "; ".join(check_one(deserializers, exchange("GET", path, status, json.dumps(body).encode()))[1])

    def planted(want, body, path=path, status=200):
        got = found(body, path, status)
        if want not in got:
            raise AssertionError("planted %r, found %r" % (want, got))

    planted("properties.surprise: unknown", dict(disk, properties=dict(disk["properties"], surprise=1)))
    planted("(body): unknown to the SDK's model (additional_properties ['surprise'])", dict(disk, surprise=1))
    planted("missing disk_state", dict(disk, properties={k: v for k, v in disk["properties"].items() if k != "diskState"}))
    planted("properties.diskSizeGB: '4' becomes 4", dict(disk, properties=dict(disk["properties"], diskSizeGB="4")))
    planted("without code", {"error": {"message": "m"}}, "/x", 409)
    planted("without `error`", {"status": "Failed"}, "/subscriptions/s/providers/Microsoft.Compute/locations/l/operations/1")
    planted("cannot decode", {"properties": {"storageProfile": []}},
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v")
    if found(disk):
        raise AssertionError("a sound disk: %s" % found(disk))
