package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	armcompute "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/diskclient"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/policy/retryrepectthrottled"
)

type scenario struct {
	name string
	run  func(ctx context.Context) error
}

// The disks the scenarios make: one for the availability-set VMs (no zone), one for the
// scale-set instance (in its zone).
const (
	asDisk = "go-sdk-as"
	ssDisk = "go-sdk-ss"
)

func (w *world) scenarios() []scenario {
	return []scenario{
		{"cloud discovery (metadata array form)", w.discovery},
		{"credentials: secret, App Service MI", w.credentials},
		{"disks: create (azclient poller), list", w.createAndList},
		{"scale sets: list, get, instances", w.scaleSets},
		{"VM: full-model PUT attach, If-Match", w.fullModelPut},
		{"VM: cloud-provider-azure detach, {} PUT", w.cloudProviderDetach},
		{"VM: attachDetachDataDisks", w.vmAttachDetach},
		{"scale-set VM: storageProfile-only update", w.scaleSetUpdate},
		{"scale-set VM: attachDetachDataDisks", w.scaleSetAttachDetach},
		{"disk: online growth", w.grow},
		{"snapshot: create, get, delete", w.snapshot},
		{"throttled: 429 and 503", w.throttled},
		{"failed operations", w.failed},
		{"disks: delete", w.deleteDisks},
	}
}

func (w *world) discovery(ctx context.Context) error {
	if got, want := w.cloudCfg.ActiveDirectoryAuthorityHost, w.ready.Login+"/"; got != want {
		return fmt.Errorf("authority host %q, want %q", got, want)
	}
	rm := w.cloudCfg.Services["resourceManager"]
	if rm.Endpoint != w.ready.Arm+"/" || rm.Audience == "" {
		return fmt.Errorf("resource manager %+v", rm)
	}
	return nil
}

func (w *world) credentials(ctx context.Context) error {
	if err := w.token(ctx, w.spCred); err != nil {
		return fmt.Errorf("service principal: %w", err)
	}
	wrong, err := azidentity.NewClientSecretCredential(w.ready.Tenant, w.ready.ClientID, "not-the-secret",
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions:            policy.ClientOptions{Cloud: w.cloudCfg},
			DisableInstanceDiscovery: true,
		})
	if err != nil {
		return err
	}
	if err := w.token(ctx, wrong); err == nil {
		return errors.New("a token for a wrong client secret")
	}
	if err := w.token(ctx, w.miCred); err != nil {
		return fmt.Errorf("kubelet identity by client id: %w", err)
	}
	// The same identity by its resource ID (mi_res_id), as the node's VM model names it.
	vm, err := w.sdk.NewVirtualMachineScaleSetVMsClient().Get(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, nil)
	if err != nil {
		return err
	}
	if vm.Identity == nil || len(vm.Identity.UserAssignedIdentities) != 1 {
		return errors.New("the instance names no user-assigned identity")
	}
	for id := range vm.Identity.UserAssignedIdentities {
		byRes, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ID: azidentity.ResourceID(id),
		})
		if err != nil {
			return err
		}
		if err := w.token(ctx, byRes); err != nil {
			return fmt.Errorf("kubelet identity by resource id: %w", err)
		}
	}
	other, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID: azidentity.ClientID("00000000-0000-0000-0000-000000000000"),
	})
	if err != nil {
		return err
	}
	if err := w.token(ctx, other); err == nil {
		return errors.New("a token for an identity the node does not have")
	}
	system, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		return err
	}
	if err := w.token(ctx, system); err != nil {
		return fmt.Errorf("system-assigned identity: %w", err)
	}
	return nil
}

func (w *world) createAndList(ctx context.Context) error {
	// azclient: its poller (5 s between polls without Retry-After).
	d, err := w.az.disks.CreateOrUpdate(ctx, w.ready.ResourceGroup, asDisk, armcompute.Disk{
		Location: to.Ptr(w.ready.Location),
		SKU:      &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypesStandardSSDLRS)},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)},
			DiskSizeGB:   to.Ptr[int32](4),
		},
		Tags: map[string]*string{"kubernetes.io-created-for-pvc-name": to.Ptr("go-sdk")},
	})
	if err != nil {
		return fmt.Errorf("azclient create: %w", err)
	}
	if d == nil || d.Properties == nil || *d.Properties.ProvisioningState != "Succeeded" ||
		*d.Properties.DiskState != armcompute.DiskStateUnattached {
		return fmt.Errorf("created disk %+v", d)
	}
	// armcompute directly: a zonal Premium disk for the scale-set instance.
	p, err := w.sdk.NewDisksClient().BeginCreateOrUpdate(ctx, w.ready.ResourceGroup, ssDisk, armcompute.Disk{
		Location: to.Ptr(w.ready.Location),
		Zones:    []*string{to.Ptr(w.ssZone)},
		SKU:      &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypesPremiumLRS)},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)},
			DiskSizeGB:   to.Ptr[int32](4),
		},
	}, nil)
	if err != nil {
		return err
	}
	if _, err := p.PollUntilDone(ctx, pollEvery); err != nil {
		return fmt.Errorf("armcompute create: %w", err)
	}
	inRG, err := w.az.disks.List(ctx, w.ready.ResourceGroup)
	if err != nil {
		return err
	}
	var all []*armcompute.Disk
	pager := w.sdk.NewDisksClient().NewListPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("Disks_List: %w", err)
		}
		all = append(all, page.Value...)
	}
	for _, name := range []string{asDisk, ssDisk} {
		if !hasDisk(inRG, name) || !hasDisk(all, name) {
			return fmt.Errorf("%s missing from a list (resource group %d, subscription %d)", name, len(inRG), len(all))
		}
	}
	return nil
}

func hasDisk(list []*armcompute.Disk, name string) bool {
	for _, d := range list {
		if d.Name != nil && *d.Name == name {
			return true
		}
	}
	return false
}

func (w *world) scaleSets(ctx context.Context) error {
	sets, err := w.az.scaleSets.List(ctx, w.ready.ResourceGroup)
	if err != nil {
		return err
	}
	if len(sets) == 0 {
		return errors.New("no scale set listed")
	}
	ss, err := w.az.scaleSets.Get(ctx, w.ready.ResourceGroup, w.scaleSet, nil)
	if err != nil {
		return err
	}
	if ss.Properties == nil || ss.Properties.OrchestrationMode == nil ||
		*ss.Properties.OrchestrationMode != armcompute.OrchestrationModeUniform {
		return fmt.Errorf("scale set %s is not Uniform", w.scaleSet)
	}
	vms, err := w.az.instances.List(ctx, w.ready.ResourceGroup, w.scaleSet)
	if err != nil {
		return err
	}
	if int64(len(vms)) != *ss.SKU.Capacity {
		return fmt.Errorf("%d instances listed, capacity %d", len(vms), *ss.SKU.Capacity)
	}
	if _, err := w.az.scaleSets.Get(ctx, w.ready.ResourceGroup, "no-such-pool", nil); status(err) != 404 {
		return fmt.Errorf("a missing scale set: %v", err)
	}
	return nil
}

// fullModelPut: read the VM, append a data disk to the model as read, PUT the whole model back
// with the etag read (VirtualMachines_CreateOrUpdate as a generic client writes it).
func (w *world) fullModelPut(ctx context.Context) error {
	vms := w.sdk.NewVirtualMachinesClient()
	got, err := vms.Get(ctx, w.ready.ResourceGroup, w.asVM, nil)
	if err != nil {
		return err
	}
	vm := got.VirtualMachine
	if vm.Etag == nil {
		return errors.New("the VM has no etag")
	}
	etag := *vm.Etag
	vm.Properties.StorageProfile.DataDisks = append(vm.Properties.StorageProfile.DataDisks, &armcompute.DataDisk{
		Lun:          to.Ptr[int32](3),
		Name:         to.Ptr(asDisk),
		CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesAttach),
		Caching:      to.Ptr(armcompute.CachingTypesReadOnly),
		ManagedDisk:  &armcompute.ManagedDiskParameters{ID: to.Ptr(w.diskID(asDisk))},
	})
	p, err := vms.BeginCreateOrUpdate(ctx, w.ready.ResourceGroup, w.asVM, vm,
		&armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions{IfMatch: &etag})
	if err != nil {
		return fmt.Errorf("full-model PUT: %w", err)
	}
	done, err := p.PollUntilDone(ctx, pollEvery)
	if err != nil {
		return err
	}
	if lunOf(done.Properties.StorageProfile, asDisk) != 3 {
		return fmt.Errorf("after the PUT the VM has %s at LUN %d", asDisk, lunOf(done.Properties.StorageProfile, asDisk))
	}
	// The same PUT with the etag read before it: someone else changed the VM.
	_, err = vms.BeginCreateOrUpdate(ctx, w.ready.ResourceGroup, w.asVM, vm,
		&armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions{IfMatch: &etag})
	return expectCode(err, "PreconditionFailed", 412)
}

func lunOf(sp *armcompute.StorageProfile, disk string) int32 {
	if sp == nil {
		return -1
	}
	for _, d := range sp.DataDisks {
		if d.Name != nil && strings.EqualFold(*d.Name, disk) {
			return *d.Lun
		}
	}
	return -1
}

// cloudProviderDetach: cloud-provider-azure's availabilitySet.DetachDisk (location and the data
// disks, the leaving one marked toBeDetached) and UpdateVM (an empty VirtualMachine), through
// azclient's VM client.
func (w *world) cloudProviderDetach(ctx context.Context) error {
	vmc := w.az.vms
	// Operations finish inside the request here: azclient's poller was shown waiting (5 s a poll
	// without Retry-After) when the disks were made.
	if err := w.timing(0, 0); err != nil {
		return err
	}
	defer func() { _ = w.timing(vmOpMs, diskOpMs) }()
	vm, err := vmc.Get(ctx, w.ready.ResourceGroup, w.asVM, nil)
	if err != nil {
		return err
	}
	disks := vm.Properties.StorageProfile.DataDisks
	for _, d := range disks {
		if d.Name != nil && *d.Name == asDisk {
			d.ToBeDetached = to.Ptr(true)
		}
	}
	after, err := vmc.CreateOrUpdate(ctx, w.ready.ResourceGroup, w.asVM, armcompute.VirtualMachine{
		Location:   vm.Location,
		Properties: &armcompute.VirtualMachineProperties{StorageProfile: &armcompute.StorageProfile{DataDisks: disks}},
	})
	if err != nil {
		return fmt.Errorf("detach PUT: %w", err)
	}
	if after == nil || lunOf(after.Properties.StorageProfile, asDisk) != -1 {
		return fmt.Errorf("still attached after the detach PUT")
	}
	refreshed, err := vmc.CreateOrUpdate(ctx, w.ready.ResourceGroup, w.asVM, armcompute.VirtualMachine{})
	if err != nil {
		return fmt.Errorf("{} PUT: %w", err)
	}
	if refreshed == nil || refreshed.Properties == nil || *refreshed.Properties.ProvisioningState != "Succeeded" {
		return fmt.Errorf("{} PUT answered %+v", refreshed)
	}
	return nil
}

// attachOne / detachOne: an attachDetachDataDisks request for one disk (LUN chosen by Azure).
func (w *world) attachOne(disk string) armcompute.AttachDetachDataDisksRequest {
	return armcompute.AttachDetachDataDisksRequest{
		DataDisksToAttach: []*armcompute.DataDisksToAttach{{DiskID: to.Ptr(w.diskID(disk))}},
	}
}

func (w *world) detachOne(disk string) armcompute.AttachDetachDataDisksRequest {
	return armcompute.AttachDetachDataDisksRequest{
		DataDisksToDetach: []*armcompute.DataDisksToDetach{{DiskID: to.Ptr(w.diskID(disk))}},
	}
}

// beginOn starts attachDetachDataDisks on an availability-set VM.
func (w *world) beginOn(ctx context.Context, vm string, req armcompute.AttachDetachDataDisksRequest) (
	*runtime.Poller[armcompute.VirtualMachinesClientAttachDetachDataDisksResponse], error) {
	return w.sdk.NewVirtualMachinesClient().BeginAttachDetachDataDisks(ctx, w.ready.ResourceGroup, vm, req, nil)
}

// on runs attachDetachDataDisks on an availability-set VM to its end: the VM's storage profile.
func (w *world) on(ctx context.Context, vm string, req armcompute.AttachDetachDataDisksRequest) (*armcompute.StorageProfile, error) {
	p, err := w.beginOn(ctx, vm, req)
	if err != nil {
		return nil, err
	}
	res, err := p.PollUntilDone(ctx, pollEvery)
	if err != nil {
		return nil, err
	}
	return &res.StorageProfile, nil
}

func (w *world) vmAttachDetach(ctx context.Context) error {
	p, err := w.beginOn(ctx, w.asVM, w.attachOne(asDisk))
	if err != nil {
		return err
	}
	// Azure runs one operation per VM: a second one while the first runs is refused.
	_, busy := w.beginOn(ctx, w.asVM, w.detachOne(asDisk))
	if err := expectCode(busy, "OperationNotAllowed", 409); err != nil {
		return fmt.Errorf("while attaching: %w", err)
	}
	res, err := p.PollUntilDone(ctx, pollEvery)
	if err != nil {
		return err
	}
	if lunOf(&res.StorageProfile, asDisk) < 0 {
		return errors.New("the answer's storage profile lacks the disk")
	}
	// Attached elsewhere: Azure names the owner.
	_, err = w.beginOn(ctx, w.asVM2, w.attachOne(asDisk))
	if err := expectCode(err, "ConflictingUserInput", 409); err != nil {
		return err
	}
	sp, err := w.on(ctx, w.asVM, w.detachOne(asDisk))
	if err != nil {
		return err
	}
	if lunOf(sp, asDisk) >= 0 {
		return errors.New("still attached after the detach")
	}
	return nil
}

// scaleSetUpdate: cloud-provider-azure's ScaleSet.AttachDisk/DetachDisk/UpdateVM — a PUT of only
// properties.storageProfile.dataDisks (no location), through azclient's instance client.
func (w *world) scaleSetUpdate(ctx context.Context) error {
	c := w.az.instances
	vm, err := c.Get(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance)
	if err != nil {
		return err
	}
	disks := append(vm.Properties.StorageProfile.DataDisks, &armcompute.DataDisk{
		Lun:                     to.Ptr[int32](5),
		Name:                    to.Ptr(ssDisk),
		CreateOption:            to.Ptr(armcompute.DiskCreateOptionTypesAttach),
		Caching:                 to.Ptr(armcompute.CachingTypesNone),
		ManagedDisk:             &armcompute.ManagedDiskParameters{ID: to.Ptr(w.diskID(ssDisk))},
		WriteAcceleratorEnabled: to.Ptr(false),
	})
	after, err := c.Update(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, armcompute.VirtualMachineScaleSetVM{
		Properties: &armcompute.VirtualMachineScaleSetVMProperties{StorageProfile: &armcompute.StorageProfile{DataDisks: disks}},
	})
	if err != nil {
		return fmt.Errorf("attach update: %w", err)
	}
	if after == nil || lunOf(after.Properties.StorageProfile, ssDisk) != 5 {
		return errors.New("the update's answer lacks the disk at LUN 5")
	}
	if err := w.timing(0, 0); err != nil {
		return err
	}
	defer func() { _ = w.timing(vmOpMs, diskOpMs) }()
	for _, d := range after.Properties.StorageProfile.DataDisks {
		if *d.Name == ssDisk {
			d.ToBeDetached = to.Ptr(true)
		}
	}
	detached, err := c.Update(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, armcompute.VirtualMachineScaleSetVM{
		Properties: &armcompute.VirtualMachineScaleSetVMProperties{StorageProfile: &armcompute.StorageProfile{DataDisks: after.Properties.StorageProfile.DataDisks}},
	})
	if err != nil {
		return fmt.Errorf("detach update: %w", err)
	}
	if lunOf(detached.Properties.StorageProfile, ssDisk) != -1 {
		return errors.New("still attached after the detach update")
	}
	if _, err := c.Update(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, armcompute.VirtualMachineScaleSetVM{}); err != nil {
		return fmt.Errorf("{} update: %w", err)
	}
	return nil
}

func (w *world) scaleSetAttachDetach(ctx context.Context) error {
	c := w.sdk.NewVirtualMachineScaleSetVMsClient()
	p, err := c.BeginAttachDetachDataDisks(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, armcompute.AttachDetachDataDisksRequest{
		DataDisksToAttach: []*armcompute.DataDisksToAttach{{DiskID: to.Ptr(w.diskID(ssDisk)), Lun: to.Ptr[int32](7)}},
	}, nil)
	if err != nil {
		return err
	}
	res, err := p.PollUntilDone(ctx, pollEvery)
	if err != nil {
		return err
	}
	if lunOf(&res.StorageProfile, ssDisk) != 7 {
		return errors.New("not at LUN 7")
	}
	// azclient's form of the same call, detaching (done inside the request).
	if err := w.timing(0, 0); err != nil {
		return err
	}
	defer func() { _ = w.timing(vmOpMs, diskOpMs) }()
	_, err = w.az.instances.AttachDetachDataDisks(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance,
		armcompute.AttachDetachDataDisksRequest{
			DataDisksToDetach: []*armcompute.DataDisksToDetach{{DiskID: to.Ptr(w.diskID(ssDisk))}},
		})
	if err != nil {
		return fmt.Errorf("azclient detach: %w", err)
	}
	vm, err := c.Get(ctx, w.ready.ResourceGroup, w.scaleSet, w.instance, nil)
	if err != nil {
		return err
	}
	if lunOf(vm.Properties.StorageProfile, ssDisk) != -1 {
		return errors.New("still attached")
	}
	return nil
}

// grow: a disk grown online while attached (Disks_Update), as the provisioner's resizer does.
func (w *world) grow(ctx context.Context) error {
	if _, err := w.on(ctx, w.asVM, w.attachOne(asDisk)); err != nil {
		return err
	}
	g, err := w.sdk.NewDisksClient().BeginUpdate(ctx, w.ready.ResourceGroup, asDisk, armcompute.DiskUpdate{
		Properties: &armcompute.DiskUpdateProperties{DiskSizeGB: to.Ptr[int32](8)},
	}, nil)
	if err != nil {
		return err
	}
	grown, err := g.PollUntilDone(ctx, pollEvery)
	if err != nil {
		return err
	}
	if *grown.Properties.DiskSizeGB != 8 || *grown.Properties.DiskState != armcompute.DiskStateAttached {
		return fmt.Errorf("grown to %d GB, %s", *grown.Properties.DiskSizeGB, *grown.Properties.DiskState)
	}
	// Shrinking is refused.
	_, err = w.az.disks.Patch(ctx, w.ready.ResourceGroup, asDisk, armcompute.DiskUpdate{
		Properties: &armcompute.DiskUpdateProperties{DiskSizeGB: to.Ptr[int32](2)},
	})
	if err == nil {
		return errors.New("a disk was shrunk")
	}
	_, err = w.on(ctx, w.asVM, w.detachOne(asDisk))
	return err
}

func (w *world) snapshot(ctx context.Context) error {
	if err := w.timing(vmOpMs, 0); err != nil {
		return err
	}
	defer func() { _ = w.timing(vmOpMs, diskOpMs) }()
	s, err := w.az.snapshots.CreateOrUpdate(ctx, w.ready.ResourceGroup, "go-sdk-snap", armcompute.Snapshot{
		Location: to.Ptr(w.ready.Location),
		Properties: &armcompute.SnapshotProperties{
			CreationData: &armcompute.CreationData{
				CreateOption:     to.Ptr(armcompute.DiskCreateOptionCopy),
				SourceResourceID: to.Ptr(w.diskID(asDisk)),
			},
		},
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if s == nil || *s.Properties.DiskSizeGB != 8 {
		return fmt.Errorf("snapshot %+v", s)
	}
	if _, err := w.sdk.NewSnapshotsClient().Get(ctx, w.ready.ResourceGroup, "go-sdk-snap", nil); err != nil {
		return err
	}
	if err := w.timing(vmOpMs, diskOpMs); err != nil {
		return err
	}
	p, err := w.sdk.NewSnapshotsClient().BeginDelete(ctx, w.ready.ResourceGroup, "go-sdk-snap", nil)
	if err != nil {
		return err
	}
	if _, err := p.PollUntilDone(ctx, pollEvery); err != nil {
		return err
	}
	_, err = w.sdk.NewSnapshotsClient().Get(ctx, w.ready.ResourceGroup, "go-sdk-snap", nil)
	return expectCode(err, "ResourceNotFound", 404)
}

// throttled: azclient's ThrottlingPolicy turns a 429 into a ThrottleError and shuts the client's
// gate until Retry-After is over. azcore's retry policy then tries again with its own back-off
// (5 s, then longer): the ThrottleError reaches it without the response (azcore's
// BearerTokenPolicy, between the two, hands errors on without it), so Retry-After is not what it
// waits, but nothing is sent before Retry-After. A 503 is retried (azclient's retriable codes);
// armcompute's default policy retries a 429 after its Retry-After.
func (w *world) throttled(ctx context.Context) error {
	path := "/disks/" + asDisk
	if err := w.fault(map[string]any{"operation": "Disks_Get", "times": 1, "action": map[string]any{
		"kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 2}}); err != nil {
		return err
	}
	before := w.rec.count("GET", path)
	if _, err := w.az.disks.Get(ctx, w.ready.ResourceGroup, asDisk); err != nil {
		return fmt.Errorf("a read throttled for 2 s: %w", err)
	}
	tries := w.rec.after(before, "GET", path)
	if len(tries) != 2 || tries[0].Status != 429 || tries[1].At.Sub(tries[0].At) < 2*time.Second {
		return fmt.Errorf("a 429 with Retry-After 2 was not waited out: %s", describe(tries))
	}

	// Throttled for two minutes: nothing more is sent by that client meanwhile, whoever calls
	// (a client of its own, whose gate stays shut; callers that stop waiting get an error).
	gated, err := diskclient.New(w.ready.Subscription, w.miCred, w.azOptions())
	if err != nil {
		return err
	}
	if err := w.fault(map[string]any{"operation": "Disks_Get", "times": 1, "action": map[string]any{
		"kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 120}}); err != nil {
		return err
	}
	before = w.rec.count("GET", path)
	for i := 0; i < 2; i++ {
		short, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
		_, err = gated.Get(short, w.ready.ResourceGroup, asDisk)
		cancel()
		if err == nil {
			return errors.New("a read inside Retry-After succeeded")
		}
	}
	if tries := w.rec.after(before, "GET", path); len(tries) != 1 || tries[0].Status != 429 {
		return fmt.Errorf("reads inside Retry-After reached Resource Manager: %s", describe(tries))
	}
	// What the callers got: the 429 (its ThrottleError), or their own deadline.
	if !errors.Is(err, retryrepectthrottled.ErrTooManyRequest) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("a read inside Retry-After: %v", err)
	}

	if err := w.fault(map[string]any{"operation": "Disks_Get", "times": 1, "action": map[string]any{
		"kind": "status", "status": 503, "retryAfter": 1}}); err != nil {
		return err
	}
	before = w.rec.count("GET", path)
	if _, err := w.az.disks.Get(ctx, w.ready.ResourceGroup, asDisk); err != nil {
		return fmt.Errorf("503 then 200: %w", err)
	}
	if tries := w.rec.after(before, "GET", path); len(tries) != 2 {
		return fmt.Errorf("503: %s, want two attempts", describe(tries))
	}

	if err := w.fault(map[string]any{"operation": "Disks_Get", "times": 1, "action": map[string]any{
		"kind": "status", "status": 429, "code": "SubscriptionRequestsThrottled", "retryAfter": 1}}); err != nil {
		return err
	}
	before = w.rec.count("GET", path)
	if _, err := w.sdk.NewDisksClient().Get(ctx, w.ready.ResourceGroup, asDisk, nil); err != nil {
		return fmt.Errorf("armcompute after a 429: %w", err)
	}
	if tries := w.rec.after(before, "GET", path); len(tries) != 2 {
		return fmt.Errorf("armcompute 429: %s, want two attempts", describe(tries))
	}
	return nil
}

// failed: operations Azure accepts and then fails (the failure visible only in the polled
// status), refusals, and missing resources — each an error the SDK hands over with ARM's code.
func (w *world) failed(ctx context.Context) error {
	if err := w.fault(map[string]any{"operation": "Disks_CreateOrUpdate", "times": 1, "action": map[string]any{
		"kind": "lroFail", "code": "InternalDiskManagementError", "message": "The disk could not be created."}}); err != nil {
		return err
	}
	_, err := w.az.disks.CreateOrUpdate(ctx, w.ready.ResourceGroup, "go-sdk-failed", armcompute.Disk{
		Location: to.Ptr(w.ready.Location),
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)},
			DiskSizeGB:   to.Ptr[int32](1),
		},
	})
	if code(err) != "InternalDiskManagementError" {
		return fmt.Errorf("a failed creation: %v", err)
	}
	if _, err := w.sdk.NewDisksClient().Get(ctx, w.ready.ResourceGroup, "go-sdk-failed", nil); expectCode(err, "ResourceNotFound", 404) != nil {
		return fmt.Errorf("the failed disk: %v", err)
	}

	if err := w.fault(map[string]any{"operation": "VirtualMachines_AttachDetachDataDisks", "times": 1, "action": map[string]any{
		"kind": "lroFail", "code": "InternalExecutionError"}}); err != nil {
		return err
	}
	if _, err := w.on(ctx, w.asVM, w.attachOne(asDisk)); code(err) != "InternalExecutionError" {
		return fmt.Errorf("a failed attach: %v", err)
	}
	vms := w.sdk.NewVirtualMachinesClient()
	vm, err := vms.Get(ctx, w.ready.ResourceGroup, w.asVM, nil)
	if err != nil {
		return err
	}
	if lunOf(vm.Properties.StorageProfile, asDisk) != -1 {
		return errors.New("a failed attach left the disk on the VM")
	}

	// Refusals: a LUN out of range, a disk that does not exist, a VM that does not exist.
	lun64 := w.attachOne(asDisk)
	lun64.DataDisksToAttach[0].Lun = to.Ptr[int32](64)
	_, err = w.beginOn(ctx, w.asVM, lun64)
	if status(err) != 400 || code(err) == "" {
		return fmt.Errorf("LUN 64: %v", err)
	}
	_, err = w.beginOn(ctx, w.asVM, w.attachOne("go-sdk-none"))
	if status(err) != 404 {
		return fmt.Errorf("a missing disk: %v", err)
	}
	_, err = w.az.vms.Get(ctx, w.ready.ResourceGroup, "no-such-vm", nil)
	return expectCode(err, "ResourceNotFound", 404)
}

func (w *world) deleteDisks(ctx context.Context) error {
	for _, name := range []string{asDisk, ssDisk} {
		p, err := w.sdk.NewDisksClient().BeginDelete(ctx, w.ready.ResourceGroup, name, nil)
		if err != nil {
			return err
		}
		if _, err := p.PollUntilDone(ctx, pollEvery); err != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		if _, err := w.sdk.NewDisksClient().Get(ctx, w.ready.ResourceGroup, name, nil); expectCode(err, "ResourceNotFound", 404) != nil {
			return fmt.Errorf("%s after its deletion: %v", name, err)
		}
	}
	// Deleting what is gone succeeds (204), through azclient too.
	return w.az.disks.Delete(ctx, w.ready.ResourceGroup, asDisk)
}
