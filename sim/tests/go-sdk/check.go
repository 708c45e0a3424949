package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	armcompute "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
)

// exchange is one HTTP attempt the SDK made to Resource Manager and what it got back.
type exchange struct {
	Method    string
	Path      string
	Query     url.Values
	Status    int
	Body      []byte
	UserAgent string
	// When the answer came.
	At time.Time
}

// recorder is a per-retry pipeline policy: it keeps every attempt's answer (retries included)
// and hands the body on unchanged.
type recorder struct {
	mu        sync.Mutex
	exchanges []exchange
}

func (r *recorder) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if err != nil || resp == nil {
		return resp, err
	}
	body, readErr := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if readErr != nil {
		return resp, readErr
	}
	raw := req.Raw()
	r.mu.Lock()
	r.exchanges = append(r.exchanges, exchange{
		Method:    raw.Method,
		Path:      raw.URL.Path,
		Query:     raw.URL.Query(),
		Status:    resp.StatusCode,
		Body:      body,
		UserAgent: raw.Header.Get("User-Agent"),
		At:        time.Now(),
	})
	r.mu.Unlock()
	return resp, nil
}

func (r *recorder) all() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]exchange(nil), r.exchanges...)
}

// count of attempts so far whose method and path match.
func (r *recorder) count(method, pathSuffix string) int {
	n := 0
	for _, e := range r.all() {
		if e.Method == method && strings.HasSuffix(strings.ToLower(e.Path), strings.ToLower(pathSuffix)) {
			n++
		}
	}
	return n
}

// after: the attempts that match, past the first `skip`.
func (r *recorder) after(skip int, method, pathSuffix string) []exchange {
	var out []exchange
	for _, e := range r.all() {
		if e.Method == method && strings.HasSuffix(strings.ToLower(e.Path), strings.ToLower(pathSuffix)) {
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, e)
		}
	}
	return out
}

func describe(es []exchange) string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s %d %.100s", e.At.Format("15:04:05.000"), e.Status, e.Body))
	}
	return strings.Join(out, "; ")
}

// checkAll decodes every answer into the SDK model of its operation and reports what the model
// does not know, what the SDK's callers need and did not get, and error bodies azcore cannot read.
func checkAll(exchanges []exchange) []string {
	var problems []string
	for _, e := range exchanges {
		where := fmt.Sprintf("%s %s → %d", e.Method, e.Path, e.Status)
		if e.Status == http.StatusNoContent || len(bytes.TrimSpace(e.Body)) == 0 {
			if e.Status == http.StatusOK && e.Method == http.MethodGet {
				problems = append(problems, where+": an empty 200 answer to a GET")
			}
			continue
		}
		for _, p := range checkOne(e) {
			problems = append(problems, where+": "+p)
		}
	}
	sort.Strings(problems)
	return dedupe(problems)
}

func checkOne(e exchange) []string {
	if e.Status >= 400 {
		return checkError(e.Body)
	}
	model, required := modelFor(e)
	if model == nil {
		return nil
	}
	return roundTrip(e.Body, model, required)
}

// modelFor picks the SDK model of an answer, with what the SDK's callers read from it
// (cloud-provider-azure's disk and node code: ids, names, provisioning states, the data disks,
// the scale-set instance's computer name, the orchestration mode).
func modelFor(e exchange) (any, func(any) []string) {
	segs := strings.Split(strings.Trim(e.Path, "/"), "/")
	last := strings.ToLower(segs[len(segs)-1])
	before := ""
	if len(segs) > 1 {
		before = strings.ToLower(segs[len(segs)-2])
	}
	switch {
	case before == "diskoperations" || before == "operations":
		if e.Query.Get("monitor") == "true" && e.Status == http.StatusOK {
			// The Location form's final answer: the operation's result.
			if before == "diskoperations" {
				return &armcompute.Disk{}, needDisk
			}
			return &armcompute.StorageProfile{}, nil
		}
		return &operationStatus{}, needStatus
	case last == "attachdetachdatadisks":
		return &armcompute.StorageProfile{}, nil
	case last == "disks":
		return &armcompute.DiskList{}, each(func(l any) []any { return anySlice(l.(*armcompute.DiskList).Value) }, needDisk)
	case before == "disks":
		return &armcompute.Disk{}, needDisk
	case last == "snapshots":
		return &armcompute.SnapshotList{}, nil
	case before == "snapshots":
		return &armcompute.Snapshot{}, needSnapshot
	case last == "virtualmachinescalesets":
		return &armcompute.VirtualMachineScaleSetListResult{}, each(func(l any) []any {
			return anySlice(l.(*armcompute.VirtualMachineScaleSetListResult).Value)
		}, needScaleSet)
	case before == "virtualmachinescalesets":
		return &armcompute.VirtualMachineScaleSet{}, needScaleSet
	case last == "virtualmachines" && len(segs) >= 4 && strings.EqualFold(segs[len(segs)-3], "virtualMachineScaleSets"):
		return &armcompute.VirtualMachineScaleSetVMListResult{}, each(func(l any) []any {
			return anySlice(l.(*armcompute.VirtualMachineScaleSetVMListResult).Value)
		}, needScaleSetVM)
	case before == "virtualmachines" && len(segs) >= 5 && strings.EqualFold(segs[len(segs)-4], "virtualMachineScaleSets"):
		return &armcompute.VirtualMachineScaleSetVM{}, needScaleSetVM
	case last == "virtualmachines":
		return &armcompute.VirtualMachineListResult{}, nil
	case before == "virtualmachines":
		return &armcompute.VirtualMachine{}, needVM
	}
	return nil, nil
}

// operationStatus is ARM's status resource, as azcore's async poller reads it
// (internal/pollers/async: `status`, and `error` when it failed); the SDK has no model for it.
type operationStatus struct {
	Name       *string          `json:"name"`
	Status     *string          `json:"status"`
	StartTime  *time.Time       `json:"startTime"`
	EndTime    *time.Time       `json:"endTime"`
	Error      *json.RawMessage `json:"error"`
	Properties *json.RawMessage `json:"properties"`
}

func needStatus(m any) []string {
	s := m.(*operationStatus)
	switch {
	case s.Status == nil:
		return []string{"status resource without `status`"}
	case *s.Status == "Failed" && s.Error == nil:
		return []string{"a Failed status without `error`"}
	}
	switch *s.Status {
	case "InProgress", "Succeeded", "Failed", "Canceled":
		return nil
	}
	return []string{"status " + *s.Status + " is none of InProgress, Succeeded, Failed, Canceled"}
}

func needDisk(m any) []string {
	d := m.(*armcompute.Disk)
	var p []string
	need(&p, d.ID != nil && d.Name != nil && d.Type != nil && d.Location != nil, "disk id, name, type, location")
	need(&p, d.SKU != nil && d.SKU.Name != nil, "disk sku.name")
	if need(&p, d.Properties != nil, "disk properties") {
		q := d.Properties
		need(&p, q.DiskSizeGB != nil, "properties.diskSizeGB")
		need(&p, q.DiskState != nil, "properties.diskState")
		need(&p, q.ProvisioningState != nil, "properties.provisioningState")
		need(&p, q.UniqueID != nil, "properties.uniqueId")
		need(&p, q.TimeCreated != nil, "properties.timeCreated")
		need(&p, q.CreationData != nil && q.CreationData.CreateOption != nil, "properties.creationData.createOption")
	}
	return p
}

func needSnapshot(m any) []string {
	s := m.(*armcompute.Snapshot)
	var p []string
	need(&p, s.ID != nil && s.Name != nil && s.Location != nil, "snapshot id, name, location")
	if need(&p, s.Properties != nil, "snapshot properties") {
		need(&p, s.Properties.ProvisioningState != nil, "properties.provisioningState")
		need(&p, s.Properties.DiskSizeGB != nil, "properties.diskSizeGB")
		need(&p, s.Properties.CreationData != nil && s.Properties.CreationData.SourceResourceID != nil,
			"properties.creationData.sourceResourceId")
	}
	return p
}

func needDataDisks(p *[]string, sp *armcompute.StorageProfile) {
	if !need(p, sp != nil, "properties.storageProfile") {
		return
	}
	need(p, sp.DataDisks != nil, "properties.storageProfile.dataDisks")
	for _, d := range sp.DataDisks {
		need(p, d.Lun != nil && d.Name != nil && d.ManagedDisk != nil && d.ManagedDisk.ID != nil,
			"dataDisks[].lun, name, managedDisk.id")
	}
}

func needVM(m any) []string {
	v := m.(*armcompute.VirtualMachine)
	var p []string
	need(&p, v.ID != nil && v.Name != nil && v.Location != nil, "VM id, name, location")
	if need(&p, v.Properties != nil, "VM properties") {
		need(&p, v.Properties.ProvisioningState != nil, "properties.provisioningState")
		need(&p, v.Properties.VMID != nil, "properties.vmId")
		need(&p, v.Properties.HardwareProfile != nil && v.Properties.HardwareProfile.VMSize != nil, "properties.hardwareProfile.vmSize")
		needDataDisks(&p, v.Properties.StorageProfile)
	}
	return p
}

func needScaleSetVM(m any) []string {
	v := m.(*armcompute.VirtualMachineScaleSetVM)
	var p []string
	need(&p, v.ID != nil && v.Name != nil && v.InstanceID != nil && v.Location != nil, "instance id, name, instanceId, location")
	if need(&p, v.Properties != nil, "instance properties") {
		need(&p, v.Properties.ProvisioningState != nil, "properties.provisioningState")
		need(&p, v.Properties.OSProfile != nil && v.Properties.OSProfile.ComputerName != nil,
			"properties.osProfile.computerName (how cloud-provider-azure maps nodes to instances)")
		needDataDisks(&p, v.Properties.StorageProfile)
	}
	return p
}

func needScaleSet(m any) []string {
	s := m.(*armcompute.VirtualMachineScaleSet)
	var p []string
	need(&p, s.ID != nil && s.Name != nil && s.Location != nil, "scale set id, name, location")
	need(&p, s.SKU != nil && s.SKU.Capacity != nil, "scale set sku.capacity")
	if need(&p, s.Properties != nil, "scale set properties") {
		need(&p, s.Properties.OrchestrationMode != nil, "properties.orchestrationMode (Uniform or Flexible decides the client)")
		need(&p, s.Properties.ProvisioningState != nil, "properties.provisioningState")
	}
	return p
}

func need(p *[]string, ok bool, what string) bool {
	if !ok {
		*p = append(*p, "missing "+what)
	}
	return ok
}

func each(items func(any) []any, check func(any) []string) func(any) []string {
	return func(list any) []string {
		var p []string
		for _, it := range items(list) {
			p = append(p, check(it)...)
		}
		return p
	}
}

func anySlice[T any](s []*T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// roundTrip decodes the body into the model and encodes it again: whatever the first has and the
// second lacks is a field the SDK does not know (it would be dropped, unseen by callers).
func roundTrip(body []byte, model any, required func(any) []string) []string {
	if err := json.Unmarshal(body, model); err != nil {
		return []string{fmt.Sprintf("the SDK's %T cannot decode it: %v", model, err)}
	}
	again, err := json.Marshal(model)
	if err != nil {
		return []string{fmt.Sprintf("the SDK's %T cannot encode it again: %v", model, err)}
	}
	var raw, back any
	_ = json.Unmarshal(body, &raw)
	_ = json.Unmarshal(again, &back)
	p := diff(raw, back, "")
	if required != nil {
		p = append(p, required(model)...)
	}
	return p
}

func diff(raw, back any, at string) []string {
	switch r := raw.(type) {
	case map[string]any:
		b, ok := back.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: the SDK reads it as %T", orRoot(at), back)}
		}
		var p []string
		for k, v := range r {
			if v == nil {
				continue
			}
			bv, known := b[k]
			if !known {
				p = append(p, fmt.Sprintf("%s.%s: unknown to the SDK's model", at, k))
				continue
			}
			p = append(p, diff(v, bv, at+"."+k)...)
		}
		return p
	case []any:
		b, ok := back.([]any)
		if !ok || len(b) != len(r) {
			return []string{fmt.Sprintf("%s: the SDK reads the list differently", orRoot(at))}
		}
		var p []string
		for i := range r {
			p = append(p, diff(r[i], b[i], fmt.Sprintf("%s[]", at))...)
		}
		return p
	case string:
		if b, ok := back.(string); ok && (b == r || sameInstant(r, b)) {
			return nil
		}
		return []string{fmt.Sprintf("%s: %q becomes %v in the SDK's model", orRoot(at), r, back)}
	default:
		if reflect.DeepEqual(raw, back) {
			return nil
		}
		return []string{fmt.Sprintf("%s: %v becomes %v in the SDK's model", orRoot(at), raw, back)}
	}
}

// sameInstant: the SDK writes times back in its own RFC 3339 form.
func sameInstant(a, b string) bool {
	ta, errA := time.Parse(time.RFC3339Nano, a)
	tb, errB := time.Parse(time.RFC3339Nano, b)
	return errA == nil && errB == nil && ta.Equal(tb)
}

func orRoot(at string) string {
	if at == "" {
		return "(body)"
	}
	return at
}

// checkError: ARM's error body `{"error":{"code","message",…}}` (azcore.ResponseError reads the
// code from it; a body it cannot read leaves callers with no code to act on).
func checkError(body []byte) []string {
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		return []string{"an error answer without ARM's {\"error\":{…}} body"}
	}
	var p []string
	need(&p, e.Error.Code != "", "error.code")
	need(&p, e.Error.Message != "", "error.message")
	return p
}

// selfTest: the checks find what they are for, in answers made wrong on purpose.
func selfTest() error {
	disk := `{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d","name":"d",
		"type":"Microsoft.Compute/disks","location":"westus2","sku":{"name":"Premium_LRS"},
		"properties":{"diskSizeGB":4,"diskState":"Unattached","provisioningState":"Succeeded",
		"uniqueId":"u","timeCreated":"2025-01-02T03:04:05.1234567+00:00",
		"creationData":{"createOption":"Empty"},"surprise":1}}`
	cases := map[string]exchange{
		"properties.surprise: unknown": {Method: "GET", Path: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
			Status: 200, Body: []byte(disk)},
		"missing properties.diskState": {Method: "GET", Path: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
			Status: 200, Body: []byte(strings.Replace(disk, `"diskState":"Unattached",`, "", 1))},
		"error.code": {Method: "GET", Path: "/x", Status: 409, Body: []byte(`{"error":{"message":"m"}}`)},
		"without `error`": {Method: "GET", Path: "/subscriptions/s/providers/Microsoft.Compute/locations/l/operations/1",
			Status: 200, Body: []byte(`{"status":"Failed"}`)},
		"cannot decode": {Method: "GET", Path: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
			Status: 200, Body: []byte(`{"properties":{"storageProfile":[]}}`)},
	}
	for want, e := range cases {
		found := strings.Join(checkOne(e), "; ")
		if !strings.Contains(found, want) {
			return fmt.Errorf("planted %q, found %q", want, found)
		}
	}
	if p := checkOne(exchange{Method: "GET", Path: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
		Status: 200, Body: []byte(strings.Replace(disk, `,"surprise":1`, "", 1))}); len(p) != 0 {
		return fmt.Errorf("a sound disk: %v", p)
	}
	return nil
}

func dedupe(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
