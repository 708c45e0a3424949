"""The simulator as Azure's Python SDK sees it: credentials, management clients, a recorder of
every answer Resource Manager gave, and the simulator's control API (fault rules, timing)."""

import base64
import json
import os
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient

# How long the simulator's operations take: long enough that pollers see them in progress and
# wait as Retry-After says, short enough for a quick suite.
VM_OP_MS = 1500
DISK_OP_MS = 1200
# What the pollers wait when an answer names no Retry-After (the SDK's default is 30 s).
POLL_SECONDS = 1


class Exchange:
    """One HTTP attempt the SDK made to Resource Manager and what it got back."""

    def __init__(self, method, url, status, body, headers, user_agent):
        parts = urlsplit(url)
        self.method = method
        self.path = parts.path
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.status = status
        self.body = body
        self.headers = headers
        self.user_agent = user_agent
        self.at = time.monotonic()

    def describe(self):
        return "%.3f %d %.100s" % (self.at, self.status, self.body.decode("utf-8", "replace"))


class Recorder:
    """A requests response hook under the SDK's transport: every attempt's answer, retries and
    polls included. Reading `content` here keeps the body for the SDK too (requests hands a read
    body to a streaming reader from memory)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._exchanges = []

    def hook(self, response, *args, **kwargs):
        req = response.request
        ex = Exchange(req.method, req.url, response.status_code, response.content or b"",
                      dict(response.headers), req.headers.get("User-Agent", ""))
        with self._lock:
            self._exchanges.append(ex)
        return response

    def all(self):
        with self._lock:
            return list(self._exchanges)

    def matching(self, method, path_suffix):
        suffix = path_suffix.lower()
        return [e for e in self.all() if e.method == method and e.path.lower().endswith(suffix)]


class AllowHttpOnLoopback(SansIOHTTPPolicy):
    """azure-core refuses to send a bearer token over plain HTTP unless a request says
    `enforce_https=False` (azure/core/pipeline/policies/_authentication.py `_enforce_https`);
    the simulated Resource Manager is plain HTTP on loopback, so every request to it says so,
    polls included, and nothing else does."""

    def on_request(self, request):
        host = urlsplit(request.http_request.url).hostname
        if host in ("127.0.0.1", "localhost", "::1"):
            request.context["enforce_https"] = False


def token_claims(token):
    """The claims of a JWT (unverified: the simulator signed it; what matters is whose it is)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class World:
    def __init__(self, ready):
        self.ready = ready
        self.rg = ready["resourceGroup"]
        self.sub = ready["subscription"]
        self.location = ready["location"]
        self.rec = Recorder()
        self.as_vm = self.as_vm2 = self.scale_set = self.instance = self.ss_zone = None
        self.ss_node = None
        for name in sorted(ready["nodes"]):
            node = ready["nodes"][name]
            parts = node["vm"].split("/")
            if "/virtualmachinescalesets/" in node["vm"].lower():
                if self.scale_set is None:
                    self.scale_set, self.instance, self.ss_zone = parts[8], parts[10], node["zone"]
                    self.ss_node = name
            elif not node.get("zone"):
                if self.as_vm is None:
                    self.as_vm = parts[8]
                elif self.as_vm2 is None:
                    self.as_vm2 = parts[8]
        if not (self.as_vm and self.as_vm2 and self.scale_set):
            raise RuntimeError("the world needs two availability-set VMs and a scale set")
        with open(ready["nodes"][self.ss_node]["azureJson"]) as f:
            self.kubelet_client_id = json.load(f)["userAssignedIdentityID"]

        # Without IDENTITY_ENDPOINT, MSAL would ask the real IMDS (169.254.169.254) for the
        # node's identity: the test's traffic stays on the simulator's loopback listeners.
        for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
            if not os.environ.get(var):
                raise RuntimeError("%s is not set (the node's App Service identity endpoint)" % var)
        if urlsplit(os.environ["IDENTITY_ENDPOINT"]).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise RuntimeError("IDENTITY_ENDPOINT is not on loopback")

        # The service principal: MSAL validates an authority it does not know by asking the
        # public cloud unless told not to, as a private cloud's operator does.
        self.sp_cred = self.secret_credential(ready["clientSecret"])
        # The node's kubelet identity: IDENTITY_ENDPOINT and IDENTITY_HEADER (set by the test)
        # choose the App Service protocol (msal/managed_identity.py `_obtain_token`).
        self.mi_cred = ManagedIdentityCredential(client_id=self.kubelet_client_id)
        self.sp = self.client(self.sp_cred)
        self.mi = self.client(self.mi_cred)
        self.timing(VM_OP_MS, DISK_OP_MS)

    def secret_credential(self, secret):
        return ClientSecretCredential(
            self.ready["tenant"], self.ready["clientId"], secret,
            authority=self.ready["login"], disable_instance_discovery=True)

    def client(self, credential, **options):
        """A ComputeManagementClient as a Python user makes one for a private cloud: its
        resource manager URL, the SDK's default token scope and retry policy; its transport
        records every answer."""
        session = requests.Session()
        session.hooks["response"].append(self.rec.hook)
        return ComputeManagementClient(
            credential, self.sub, base_url=self.ready["arm"],
            transport=RequestsTransport(session=session, session_owner=False),
            per_call_policies=[AllowHttpOnLoopback()],
            polling_interval=POLL_SECONDS, **options)

    def disk_id(self, name):
        return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/disks/%s" % (
            self.sub, self.rg, name)

    # The simulator's control API.
    def control(self, method, path, body=None):
        r = requests.request(method, self.ready["control"] + path, json=body, timeout=30)
        if r.status_code >= 300:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status_code, r.text))
        return r.json() if r.content else None

    def fault(self, **rule):
        self.control("POST", "/faults", rule)

    def timing(self, vm_ms, disk_ms):
        self.control("PUT", "/timing", {"vmOpMs": vm_ms, "diskOpMs": disk_ms})

    @contextmanager
    def quick(self, vm_ms=0, disk_ms=0):
        """Operations begun meanwhile take this long (by default they finish inside the request,
        once pollers were shown waiting)."""
        self.timing(vm_ms, disk_ms)
        try:
            yield
        finally:
            self.timing(VM_OP_MS, DISK_OP_MS)

    @contextmanager
    def environment(self, **changes):
        """Environment variables changed for a while (MSAL reads them at every token request);
        a value of None removes one."""
        saved = {k: os.environ.get(k) for k in changes}
        try:
            set_environment(changes)
            yield
        finally:
            set_environment(saved)


def set_environment(values):
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
