// Command sim-go-sdk-conformance drives a running flexdisk-sim with Azure's official Go SDK the
// way Kubernetes' Azure code does: cloud-provider-azure's azclient (cloud discovery, managed
// identity, its client factory, poller and throttling policy) over armcompute/v7 and azidentity.
// Every answer the SDK received is decoded into the SDK's own model and checked for fields the
// model does not know, fields it needs and never got, and error bodies it cannot read
// (check.go).
//
// Input: the simulator's ready line on stdin. Environment: SSL_CERT_FILE (the simulator's CA),
// IDENTITY_ENDPOINT and IDENTITY_HEADER of one node (the App Service managed-identity protocol).
// Output: one line per scenario (PASS/FAIL, duration), then one JSON summary line; exit status 1
// when anything failed. Traffic goes only to the addresses in the ready line (loopback).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

type ready struct {
	Arm           string          `json:"arm"`
	Login         string          `json:"login"`
	Control       string          `json:"control"`
	Tenant        string          `json:"tenant"`
	ClientID      string          `json:"clientId"`
	ClientSecret  string          `json:"clientSecret"`
	Subscription  string          `json:"subscription"`
	ResourceGroup string          `json:"resourceGroup"`
	Location      string          `json:"location"`
	Nodes         map[string]node `json:"nodes"`
}

type node struct {
	VM               string `json:"vm"`
	IdentityEndpoint string `json:"identityEndpoint"`
	AzureJSON        string `json:"azureJson"`
	Zone             string `json:"zone"`
}

type scenarioResult struct {
	Name    string  `json:"name"`
	Ok      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

type summary struct {
	Scenarios []scenarioResult `json:"scenarios"`
	// Answers recorded and decoded into the SDK's models.
	Exchanges int `json:"exchanges"`
	// What the SDK's models found wrong with the answers (check.go).
	ModelProblems []string `json:"modelProblems"`
	// Requests by operation as the SDK sent them: "PUT disks", "GET operations", …
	Requests map[string]int `json:"requests"`
	// The User-Agent values sent to Resource Manager.
	UserAgents []string `json:"userAgents"`
}

func main() {
	var r ready
	if err := json.NewDecoder(os.Stdin).Decode(&r); err != nil {
		fmt.Fprintln(os.Stderr, "reading the ready line on stdin:", err)
		os.Exit(2)
	}
	w, err := newWorld(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "setting up:", err)
		os.Exit(2)
	}
	if err := selfTest(); err != nil {
		fmt.Fprintln(os.Stderr, "the model check cannot fail:", err)
		os.Exit(2)
	}
	out := summary{ModelProblems: []string{}}
	for _, s := range w.scenarios() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		err := s.run(ctx)
		cancel()
		res := scenarioResult{Name: s.name, Ok: err == nil, Seconds: time.Since(start).Seconds()}
		if err != nil {
			res.Error = err.Error()
			fmt.Printf("FAIL %-34s %6.2fs  %v\n", s.name, res.Seconds, err)
		} else {
			fmt.Printf("PASS %-34s %6.2fs\n", s.name, res.Seconds)
		}
		out.Scenarios = append(out.Scenarios, res)
	}
	exchanges := w.rec.all()
	out.Exchanges = len(exchanges)
	out.ModelProblems = append(out.ModelProblems, checkAll(exchanges)...)
	out.Requests = map[string]int{}
	agents := map[string]bool{}
	for _, e := range exchanges {
		out.Requests[e.Method+" "+kindOf(e.Path)]++
		agents[e.UserAgent] = true
	}
	for a := range agents {
		out.UserAgents = append(out.UserAgents, a)
	}
	for _, p := range out.ModelProblems {
		fmt.Println("MODEL", p)
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	failed := len(out.ModelProblems) > 0
	for _, s := range out.Scenarios {
		failed = failed || !s.Ok
	}
	if failed {
		os.Exit(1)
	}
}

// kindOf names what a path addresses by its last resource type ("disks", "virtualMachines",
// "attachDetachDataDisks", "operations", …).
func kindOf(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	types := []string{"disks", "snapshots", "virtualMachines", "virtualMachineScaleSets",
		"attachDetachDataDisks", "operations", "DiskOperations"}
	kind := "other"
	for i, s := range segs {
		for _, t := range types {
			if strings.EqualFold(s, t) {
				kind = t
				if i == len(segs)-1 && t != "attachDetachDataDisks" {
					kind += " (list)"
				}
			}
		}
	}
	return kind
}
