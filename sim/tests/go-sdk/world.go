package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	armcompute "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/diskclient"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/snapshotclient"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/utils"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/virtualmachineclient"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/virtualmachinescalesetclient"
	"sigs.k8s.io/cloud-provider-azure/pkg/azclient/virtualmachinescalesetvmclient"
)

// world: the simulator as the SDK sees it, and two ways in.
type world struct {
	ready    ready
	rec      *recorder
	cloudCfg cloud.Configuration
	// armcompute over a service principal (azidentity, Entra ID's token endpoint).
	sdk *armcompute.ClientFactory
	// azclient's clients over the node's kubelet identity (App Service managed-identity
	// protocol), with the options cloud-provider-azure gives them.
	az azClients
	// The nodes exercised: an availability-set VM (two), a scale-set instance.
	asVM, asVM2        string
	scaleSet, instance string
	ssZone             string
	kubeletClientID    string
	spCred, miCred     azcore.TokenCredential
}

// pollEvery is what PollUntilDone waits when an answer names no Retry-After (1 s is the least
// azcore allows); azclient's own poller waits 5 s (utils.PollerWrapper).
var pollEvery = &runtime.PollUntilDoneOptions{Frequency: time.Second}

// How long the simulator's operations take: long enough that pollers see them in progress and
// wait as Retry-After says, short enough for a quick suite.
const (
	vmOpMs   = 1500
	diskOpMs = 1200
)

func newWorld(r ready) (*world, error) {
	w := &world{ready: r, rec: &recorder{}}
	if err := w.timing(vmOpMs, diskOpMs); err != nil {
		return nil, err
	}
	for name, n := range r.Nodes {
		parts := strings.Split(n.VM, "/")
		switch {
		case strings.Contains(strings.ToLower(n.VM), "/virtualmachinescalesets/") && w.scaleSet == "":
			w.scaleSet, w.instance, w.ssZone = parts[8], parts[10], n.Zone
			cfg, err := readAzureJSON(n.AzureJSON)
			if err != nil {
				return nil, err
			}
			w.kubeletClientID, _ = cfg["userAssignedIdentityID"].(string)
		case !strings.Contains(strings.ToLower(n.VM), "/virtualmachinescalesets/") && n.Zone == "":
			if w.asVM == "" || name < w.asVM {
				w.asVM, w.asVM2 = parts[8], w.asVM
			} else {
				w.asVM2 = parts[8]
			}
		}
	}
	if w.asVM == "" || w.asVM2 == "" || w.scaleSet == "" || w.kubeletClientID == "" {
		return nil, fmt.Errorf("the world needs two availability-set VMs and a scale set with the kubelet identity")
	}

	cfg, err := discover(r.Arm+"/", "AzureStackCloud")
	if err != nil {
		return nil, fmt.Errorf("cloud discovery: %w", err)
	}
	w.cloudCfg = cfg

	// The service principal: MSAL validates an unknown authority by asking the public cloud's
	// instance discovery unless told not to; a private cloud's operator turns it off.
	w.spCred, err = azidentity.NewClientSecretCredential(r.Tenant, r.ClientID, r.ClientSecret,
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions:            policy.ClientOptions{Cloud: cfg},
			DisableInstanceDiscovery: true,
		})
	if err != nil {
		return nil, err
	}
	w.sdk, err = armcompute.NewClientFactory(r.Subscription, w.spCred, &arm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud: cfg,
			// Resource Manager is plain HTTP on loopback here.
			InsecureAllowCredentialWithHTTP: true,
			PerRetryPolicies:                []policy.Policy{w.rec},
			Retry:                           policy.RetryOptions{MaxRetries: 3, RetryDelay: time.Second},
		},
	})
	if err != nil {
		return nil, err
	}

	// The node's identity as azclient's auth provider makes it for useManagedIdentityExtension
	// with userAssignedIdentityID (auth_func.go newAuthProviderWithManagedIdentity): a client id;
	// IDENTITY_ENDPOINT and IDENTITY_HEADER choose the App Service protocol.
	opts := utils.GetDefaultAzCoreClientOption()
	opts.Cloud = cfg
	w.miCred, err = azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: opts,
		ID:            azidentity.ClientID(w.kubeletClientID),
	})
	if err != nil {
		return nil, err
	}
	w.az, err = newAzClients(r.Subscription, w.miCred, w.azOptions)
	if err != nil {
		return nil, fmt.Errorf("azclient: %w", err)
	}
	return w, nil
}

// azClients: the azclient clients cloud-provider-azure's disk code uses. azclient's root package
// (its ClientFactory, auth provider and cloud discovery) cannot be built from the module proxy
// (it imports armnetwork/v12, which the proxy does not serve), so each client is made as its
// factory makes it (factory_gen.go createDiskClient …): azclient's default options (retry
// policy, ThrottlingPolicy, transport) with the discovered cloud.
type azClients struct {
	disks     diskclient.Interface
	snapshots snapshotclient.Interface
	vms       virtualmachineclient.Interface
	scaleSets virtualmachinescalesetclient.Interface
	instances virtualmachinescalesetvmclient.Interface
}

// azOptions: a fresh set of azclient's options for one client (each has its own ThrottlingPolicy).
func (w *world) azOptions() *arm.ClientOptions {
	o := utils.GetDefaultOption()
	o.Cloud = w.cloudCfg
	o.PerRetryPolicies = append(o.PerRetryPolicies, w.rec)
	return o
}

func newAzClients(sub string, cred azcore.TokenCredential, options func() *arm.ClientOptions) (azClients, error) {
	var c azClients
	var err error
	if c.disks, err = diskclient.New(sub, cred, options()); err != nil {
		return c, err
	}
	if c.snapshots, err = snapshotclient.New(sub, cred, options()); err != nil {
		return c, err
	}
	if c.vms, err = virtualmachineclient.New(sub, cred, options()); err != nil {
		return c, err
	}
	if c.scaleSets, err = virtualmachinescalesetclient.New(sub, cred, options()); err != nil {
		return c, err
	}
	c.instances, err = virtualmachinescalesetvmclient.New(sub, cred, options())
	return c, err
}

// discover reads the cloud's endpoints from `{arm}/metadata/endpoints?api-version=2019-05-01` the
// way azclient does (cloud.go OverrideAzureCloudConfigAndEnvConfigFromMetadataService, whose
// package cannot be built here): the array of clouds, the entry named as the cloud config's
// `cloud`, its loginEndpoint as the authority and its first audience as the token audience.
func discover(armEndpoint, cloudName string) (cloud.Configuration, error) {
	resp, err := http.Get(strings.TrimSuffix(armEndpoint, "/") + "/metadata/endpoints?api-version=2019-05-01")
	if err != nil {
		return cloud.Configuration{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return cloud.Configuration{}, err
	}
	var clouds []struct {
		Name            string `json:"name"`
		ResourceManager string `json:"resourceManager"`
		Authentication  struct {
			Audiences     []string `json:"audiences"`
			LoginEndpoint string   `json:"loginEndpoint"`
		} `json:"authentication"`
	}
	if err := json.Unmarshal(body, &clouds); err != nil {
		return cloud.Configuration{}, fmt.Errorf("not the array form: %w (%s)", err, body)
	}
	for _, c := range clouds {
		if !strings.EqualFold(c.Name, cloudName) {
			continue
		}
		if c.ResourceManager == "" {
			c.ResourceManager = armEndpoint
		}
		if len(c.Authentication.Audiences) == 0 {
			return cloud.Configuration{}, errors.New("no audiences")
		}
		return cloud.Configuration{
			ActiveDirectoryAuthorityHost: c.Authentication.LoginEndpoint,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: c.ResourceManager, Audience: c.Authentication.Audiences[0]},
			},
		}, nil
	}
	return cloud.Configuration{}, fmt.Errorf("no cloud named %s in %s", cloudName, body)
}

func readAzureJSON(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func (w *world) diskID(name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/disks/%s",
		w.ready.Subscription, w.ready.ResourceGroup, name)
}

// control calls the simulator's control API (fault rules, timing, counters).
func (w *world) control(method, path string, body any) (map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, w.ready.Control+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	_ = json.Unmarshal(b, &out)
	return out, nil
}

// fault adds a fault rule for the next matching requests.
func (w *world) fault(rule map[string]any) error {
	_, err := w.control("POST", "/faults", rule)
	return err
}

// timing sets how long operations begun from now take.
func (w *world) timing(vmMs, diskMs int) error {
	_, err := w.control("PUT", "/timing", map[string]int{"vmOpMs": vmMs, "diskOpMs": diskMs})
	return err
}

// code is the ARM error code of err, "" when it carries none.
func code(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func expectCode(err error, want string, httpStatus int) error {
	if err == nil {
		return fmt.Errorf("expected %d %s, the call succeeded", httpStatus, want)
	}
	if code(err) != want || status(err) != httpStatus {
		return fmt.Errorf("expected %d %s, got %d %q: %v", httpStatus, want, status(err), code(err), err)
	}
	return nil
}

// token gets an ARM token from cred (the scope of the discovered audience).
func (w *world) token(ctx context.Context, cred azcore.TokenCredential) error {
	audience := w.cloudCfg.Services[cloud.ResourceManager].Audience
	_, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{strings.TrimRight(audience, "/") + "/.default"}})
	return err
}
