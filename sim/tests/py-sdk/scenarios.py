"""What the Python SDK does to the simulator: each scenario raises on anything unexpected."""

from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                   ResourceNotFoundError)
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import models as m

from world import token_claims

# The disks the scenarios make: one for the availability-set VMs (no zone), one for the
# scale-set instance (in its zone).
AS_DISK = "py-sdk-as"
SS_DISK = "py-sdk-ss"
SNAPSHOT = "py-sdk-snap"
# The SDK's default token scope (ComputeManagementClient's credential_scopes).
ARM_SCOPE = "https://management.azure.com/.default"


class Failed(Exception):
    pass


def expect(ok, what):
    if not ok:
        raise Failed(what)


def expect_error(call, status, code=None):
    """Runs call and returns the HttpResponseError it raises, which must carry `status` (None:
    any, as for an operation that failed after it was accepted) and ARM's error `code` as the
    SDK parsed it (azure-mgmt-core's ARMErrorFormat)."""
    try:
        call()
    except HttpResponseError as e:
        got = e.error.code if e.error else None
        expect((status is None or e.status_code == status) and (code is None or got == code),
               "expected %s %s, got %s %s: %s" % (status, code, e.status_code, got, e.message))
        expect(got, "an error without a code: %s" % e.message)
        return e
    raise Failed("expected %s %s, the call succeeded" % (status, code))


def lun_of(storage_profile, disk):
    for d in (storage_profile.data_disks or []) if storage_profile else []:
        if d.name and d.name.lower() == disk.lower():
            return d.lun
    return -1


def scenarios(w):
    s = Scenarios(w)
    return [
        ("credentials: secret, App Service MI, IMDS", s.credentials),
        ("disks: create (poller), list", s.create_and_list),
        ("scale sets: list, get, instances", s.scale_sets),
        ("VM: full-model PUT attach, If-Match", s.full_model_put),
        ("VM: PATCH detach (toBeDetached)", s.patch_detach),
        ("VM: attachDetachDataDisks", s.vm_attach_detach),
        ("scale-set VM: full-model update", s.scale_set_update),
        ("scale-set VM: attachDetachDataDisks", s.scale_set_attach_detach),
        ("disk: online growth", s.grow),
        ("snapshot: create, get, delete", s.snapshot),
        ("throttled: 429 and 503", s.throttled),
        ("failed operations", s.failed),
        ("disks: delete", s.delete_disks),
    ]


class Scenarios:
    def __init__(self, w):
        self.w = w
        self.rg = w.rg

    def attaching(self, disk, lun=None):
        """An attachDetachDataDisks request attaching one disk (at the LUN Azure picks unless
        given)."""
        return m.AttachDetachDataDisksRequest(
            data_disks_to_attach=[m.DataDisksToAttach(disk_id=self.w.disk_id(disk), lun=lun)])

    def detaching(self, disk):
        return m.AttachDetachDataDisksRequest(
            data_disks_to_detach=[m.DataDisksToDetach(disk_id=self.w.disk_id(disk))])

    def begin_on(self, request, vm=None):
        """attachDetachDataDisks on an availability-set VM (the first unless named): its poller."""
        return self.w.sp.virtual_machines.begin_attach_detach_data_disks(self.rg, vm or self.w.as_vm, request)

    def begin_on_instance(self, request):
        w = self.w
        return w.mi.virtual_machine_scale_set_vms.begin_attach_detach_data_disks(
            self.rg, w.scale_set, w.instance, request)

    def credentials(self):
        w = self.w
        claims = token_claims(w.sp_cred.get_token(ARM_SCOPE).token)
        expect(claims["appid"] == w.ready["clientId"], "service principal token for %s" % claims)
        try:
            w.secret_credential("not-the-secret").get_token(ARM_SCOPE)
            raise Failed("a token for a wrong client secret")
        except ClientAuthenticationError:
            pass

        # The kubelet identity by each of its names, through the App Service protocol; the
        # token must be that identity's, whatever name asked for it.
        vm = w.sp.virtual_machine_scale_set_vms.get(self.rg, w.scale_set, w.instance)
        expect(vm.identity and len(vm.identity.user_assigned_identities or {}) == 1,
               "the instance names no user-assigned identity")
        (res_id, user), = vm.identity.user_assigned_identities.items()
        expect(user.client_id == w.kubelet_client_id, "the instance's identity %s" % user.client_id)
        for how, cred in [
            ("client id", w.mi_cred),
            ("resource id", ManagedIdentityCredential(identity_config={"resource_id": res_id})),
            ("object id", ManagedIdentityCredential(identity_config={"object_id": user.principal_id})),
        ]:
            claims = token_claims(cred.get_token(ARM_SCOPE).token)
            expect(claims["appid"] == user.client_id and claims["oid"] == user.principal_id,
                   "App Service token asked by %s is for %s/%s" % (how, claims["appid"], claims["oid"]))
        other = ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000000")
        try:
            other.get_token(ARM_SCOPE)
            raise Failed("a token for an identity the node does not have")
        except ClientAuthenticationError:
            pass
        system = token_claims(ManagedIdentityCredential().get_token(ARM_SCOPE).token)
        expect(vm.identity.principal_id and system["oid"] == vm.identity.principal_id,
               "system-assigned token for %s, the instance's is %s" % (system["oid"], vm.identity.principal_id))

        # The same identity through IMDS (the node's, where AAD Pod Identity's variable points
        # a client: msal/managed_identity.py `_obtain_token_on_azure_vm`).
        imds = w.ready["nodes"][w.ss_node]["imds"]
        with w.environment(IDENTITY_ENDPOINT=None, IDENTITY_HEADER=None,
                           AZURE_POD_IDENTITY_AUTHORITY_HOST=imds):
            for how, cred in [
                ("client id", ManagedIdentityCredential(client_id=w.kubelet_client_id)),
                ("resource id", ManagedIdentityCredential(identity_config={"resource_id": res_id})),
                ("object id", ManagedIdentityCredential(identity_config={"object_id": user.principal_id})),
            ]:
                claims = token_claims(cred.get_token(ARM_SCOPE).token)
                expect(claims["oid"] == user.principal_id,
                       "IMDS token asked by %s is for %s" % (how, claims["oid"]))

    def create_and_list(self):
        w = self.w
        poller = w.sp.disks.begin_create_or_update(self.rg, AS_DISK, m.Disk(
            location=w.location,
            sku=m.DiskSku(name="StandardSSD_LRS"),
            creation_data=m.CreationData(create_option="Empty"),
            disk_size_gb=4,
            tags={"kubernetes.io-created-for-pvc-name": "py-sdk"}))
        d = poller.result()
        # The poller waited: the creation was answered in progress and polled until it ended.
        put = w.rec.matching("PUT", "/disks/" + AS_DISK)[-1]
        polls = [e for e in w.rec.all() if "diskoperations" in e.path.lower() and e.at > put.at]
        expect(put.status == 202 and any(b'"InProgress"' in e.body for e in polls),
               "the creation was not polled: %d, %s" % (put.status, [e.describe() for e in polls]))
        expect(d.provisioning_state == "Succeeded" and d.disk_state == "Unattached",
               "created disk %s %s" % (d.provisioning_state, d.disk_state))
        # Through the node's identity: a zonal Premium disk for the scale-set instance.
        z = w.mi.disks.begin_create_or_update(self.rg, SS_DISK, m.Disk(
            location=w.location, zones=[w.ss_zone],
            sku=m.DiskSku(name="Premium_LRS"),
            creation_data=m.CreationData(create_option="Empty"),
            disk_size_gb=4)).result()
        expect(z.zones == [w.ss_zone], "zonal disk in %s" % z.zones)
        in_rg = [d.name for d in w.sp.disks.list_by_resource_group(self.rg)]
        in_sub = [d.name for d in w.mi.disks.list()]
        for name in (AS_DISK, SS_DISK):
            expect(name in in_rg and name in in_sub, "%s missing from a list" % name)

    def scale_sets(self):
        w = self.w
        sets = list(w.mi.virtual_machine_scale_sets.list(self.rg))
        expect(any(s.name == w.scale_set for s in sets), "scale set not listed")
        ss = w.mi.virtual_machine_scale_sets.get(self.rg, w.scale_set)
        expect(ss.orchestration_mode == "Uniform", "scale set %s" % ss.orchestration_mode)
        vms = list(w.mi.virtual_machine_scale_set_vms.list(self.rg, w.scale_set))
        expect(len(vms) == ss.sku.capacity, "%d instances, capacity %d" % (len(vms), ss.sku.capacity))
        expect_error(lambda: w.mi.virtual_machine_scale_sets.get(self.rg, "no-such-pool"), 404)

    def full_model_put(self):
        """Read the VM, append a data disk to the model as read and PUT it all back with the etag
        read (VirtualMachines_CreateOrUpdate as a generic client writes it)."""
        vms = self.w.sp.virtual_machines
        vm = vms.get(self.rg, self.w.as_vm)
        expect(vm.etag, "the VM has no etag")
        etag = vm.etag
        vm.storage_profile.data_disks.append(m.DataDisk(
            lun=3, name=AS_DISK, create_option="Attach", caching="ReadOnly",
            managed_disk=m.ManagedDiskParameters(id=self.w.disk_id(AS_DISK))))
        done = vms.begin_create_or_update(self.rg, self.w.as_vm, vm, if_match=etag).result()
        expect(lun_of(done.storage_profile, AS_DISK) == 3, "after the PUT: LUN %d" % lun_of(done.storage_profile, AS_DISK))
        expect(done.etag and done.etag != etag, "the etag did not change")
        # The same PUT with the etag read before it: someone else changed the VM.
        expect_error(lambda: vms.begin_create_or_update(self.rg, self.w.as_vm, vm, if_match=etag),
                     412, "PreconditionFailed")

    def patch_detach(self):
        """VirtualMachines_Update (PATCH) of the data disks, the leaving one marked toBeDetached."""
        vms = self.w.sp.virtual_machines
        disks = vms.get(self.rg, self.w.as_vm).storage_profile.data_disks
        for d in disks:
            if d.name == AS_DISK:
                d.to_be_detached = True
        after = vms.begin_update(self.rg, self.w.as_vm, m.VirtualMachineUpdate(
            storage_profile=m.StorageProfile(data_disks=disks))).result()
        expect(lun_of(after.storage_profile, AS_DISK) == -1, "still attached after the PATCH")

    def vm_attach_detach(self):
        w = self.w
        attach, detach = self.attaching(AS_DISK), self.detaching(AS_DISK)
        # Azure runs one operation per VM: a second one while the first runs is refused (the
        # first runs long enough that the second surely meets it).
        with w.quick(vm_ms=5000, disk_ms=0):
            poller = self.begin_on(attach)
        expect_error(lambda: self.begin_on(detach), 409, "OperationNotAllowed")
        sp = poller.result()
        expect(lun_of(sp, AS_DISK) >= 0, "the answer's storage profile lacks the disk")
        # Attached elsewhere: Azure names the owner.
        e = expect_error(lambda: self.begin_on(attach, w.as_vm2), 409, "ConflictingUserInput")
        expect(w.as_vm.lower() in e.message.lower(), "the refusal names no owner: %s" % e.message)
        sp = self.begin_on(detach).result()
        expect(lun_of(sp, AS_DISK) == -1, "still attached after the detach")

    def scale_set_update(self):
        """VirtualMachineScaleSetVMs_Update is a PUT: the instance as read, a disk added, PUT
        back; then the same with the disk marked toBeDetached."""
        w = self.w
        c = w.mi.virtual_machine_scale_set_vms
        vm = c.get(self.rg, w.scale_set, w.instance)
        vm.storage_profile.data_disks.append(m.DataDisk(
            lun=5, name=SS_DISK, create_option="Attach", caching="None",
            managed_disk=m.ManagedDiskParameters(id=w.disk_id(SS_DISK)), write_accelerator_enabled=False))
        after = c.begin_update(self.rg, w.scale_set, w.instance, vm).result()
        expect(lun_of(after.storage_profile, SS_DISK) == 5, "the update's answer lacks the disk at LUN 5")
        with w.quick():
            for d in after.storage_profile.data_disks:
                if d.name == SS_DISK:
                    d.to_be_detached = True
            detached = c.begin_update(self.rg, w.scale_set, w.instance, after).result()
        expect(lun_of(detached.storage_profile, SS_DISK) == -1, "still attached after the detach update")

    def scale_set_attach_detach(self):
        w = self.w
        c = w.mi.virtual_machine_scale_set_vms
        sp = self.begin_on_instance(self.attaching(SS_DISK, lun=7)).result()
        expect(lun_of(sp, SS_DISK) == 7, "not at LUN 7")
        with w.quick():
            self.begin_on_instance(self.detaching(SS_DISK)).result()
        vm = c.get(self.rg, w.scale_set, w.instance)
        expect(lun_of(vm.storage_profile, SS_DISK) == -1, "still attached")

    def grow(self):
        """Disks_Update (PATCH) of an attached disk: online growth, as flexdisk's resizer does."""
        w = self.w
        with w.quick():
            self.begin_on(self.attaching(AS_DISK)).result()
        grown = w.sp.disks.begin_update(self.rg, AS_DISK, m.DiskUpdate(disk_size_gb=8)).result()
        expect(grown.disk_size_gb == 8 and grown.disk_state == "Attached",
               "grown to %s GB, %s" % (grown.disk_size_gb, grown.disk_state))
        # Shrinking is refused.
        expect_error(lambda: w.sp.disks.begin_update(self.rg, AS_DISK, m.DiskUpdate(disk_size_gb=2)).result(), 400)
        with w.quick():
            self.begin_on(self.detaching(AS_DISK)).result()

    def snapshot(self):
        w = self.w
        snaps = w.sp.snapshots
        s = snaps.begin_create_or_update(self.rg, SNAPSHOT, m.Snapshot(
            location=w.location,
            creation_data=m.CreationData(create_option="Copy", source_resource_id=w.disk_id(AS_DISK)))).result()
        expect(s.disk_size_gb == 8 and s.provisioning_state == "Succeeded",
               "snapshot %s GB %s" % (s.disk_size_gb, s.provisioning_state))
        expect(snaps.get(self.rg, SNAPSHOT).creation_data.source_resource_id.lower() == w.disk_id(AS_DISK).lower(),
               "the snapshot's source")
        snaps.begin_delete(self.rg, SNAPSHOT).result()
        expect_error(lambda: snaps.get(self.rg, SNAPSHOT), 404, "ResourceNotFound")

    def throttled(self):
        """azure-core's RetryPolicy waits out a 429's Retry-After and tries again, for a read and
        for a poll of a running operation alike; a 503 is retried too."""
        w = self.w
        path = "/disks/" + AS_DISK
        w.fault(operation="Disks_Get", times=1, action={
            "kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 2})
        before = len(w.rec.matching("GET", path))
        w.sp.disks.get(self.rg, AS_DISK)
        tries = w.rec.matching("GET", path)[before:]
        expect(len(tries) == 2 and tries[0].status == 429 and tries[1].at - tries[0].at >= 2,
               "a 429 with Retry-After 2 was not waited out: %s" % [t.describe() for t in tries])

        # A poll throttled: the poller's GET of the status resource is retried after Retry-After
        # and the operation still ends as it should.
        w.fault(operation="OperationStatus", times=1, action={
            "kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 2})
        before = len(w.rec.all())
        sp = self.begin_on(self.attaching(AS_DISK)).result()
        expect(lun_of(sp, AS_DISK) >= 0, "the throttled attach did not attach")
        polls = [e for e in w.rec.all()[before:] if "/operations/" in e.path.lower()]
        throttled = [i for i, e in enumerate(polls) if e.status == 429]
        expect(len(throttled) == 1 and throttled[0] + 1 < len(polls)
               and polls[throttled[0] + 1].at - polls[throttled[0]].at >= 2,
               "a throttled poll was not waited out: %s" % [p.describe() for p in polls])
        with w.quick():
            self.begin_on(self.detaching(AS_DISK)).result()

        w.fault(operation="Disks_Get", times=1, action={"kind": "status", "status": 503, "retryAfter": 1})
        before = len(w.rec.matching("GET", path))
        w.mi.disks.get(self.rg, AS_DISK)
        tries = w.rec.matching("GET", path)[before:]
        expect([t.status for t in tries] == [503, 200], "503: %s" % [t.describe() for t in tries])

    def failed(self):
        """Operations Azure accepts and then fails (seen only in the polled status), refusals,
        missing resources: each an error the SDK raises with ARM's code."""
        w = self.w
        w.fault(operation="Disks_CreateOrUpdate", times=1, action={
            "kind": "lroFail", "code": "InternalDiskManagementError", "message": "The disk could not be created."})
        poller = w.sp.disks.begin_create_or_update(self.rg, "py-sdk-failed", m.Disk(
            location=w.location, creation_data=m.CreationData(create_option="Empty"), disk_size_gb=1))
        e = expect_error(poller.result, None, "InternalDiskManagementError")
        expect("could not be created" in e.message, "the failure's message: %s" % e.message)
        expect_error(lambda: w.sp.disks.get(self.rg, "py-sdk-failed"), 404, "ResourceNotFound")

        w.fault(operation="VirtualMachines_AttachDetachDataDisks", times=1, action={
            "kind": "lroFail", "code": "InternalExecutionError"})
        expect_error(self.begin_on(self.attaching(AS_DISK)).result, None, "InternalExecutionError")
        vm = w.sp.virtual_machines.get(self.rg, w.as_vm)
        expect(lun_of(vm.storage_profile, AS_DISK) == -1, "a failed attach left the disk on the VM")

        # Refusals: a LUN out of range, a disk that does not exist, a VM that does not exist.
        expect_error(lambda: self.begin_on(self.attaching(AS_DISK, lun=64)), 400)
        expect_error(lambda: self.begin_on(self.attaching("py-sdk-none")), 404)
        try:
            w.sp.virtual_machines.get(self.rg, "no-such-vm")
            raise Failed("a VM that does not exist")
        except ResourceNotFoundError as e:
            expect(e.error and e.error.code == "ResourceNotFound", "404 code %s" % (e.error and e.error.code))

    def delete_disks(self):
        w = self.w
        for name in (AS_DISK, SS_DISK):
            w.sp.disks.begin_delete(self.rg, name).result()
            expect_error(lambda: w.sp.disks.get(self.rg, name), 404, "ResourceNotFound")
        # Deleting what is gone succeeds (204), with nothing to poll.
        before = len(w.rec.all())
        w.sp.disks.begin_delete(self.rg, AS_DISK).result()
        after = [(e.method, e.status) for e in w.rec.all()[before:]]
        expect(after == [("DELETE", 204)], "deleting a missing disk: %s" % after)
