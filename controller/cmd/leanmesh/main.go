// Command leanmesh is the control-plane side of leanmesh:
//
//	leanmesh controller   run the TelemetryPolicy controller (manager)
//	leanmesh render       write the plain manifests under envoyfilters/
//	leanmesh compare      compare Istio's and leanmesh's Prometheus output
//	leanmesh uninstall    stop the controller and delete what it rendered (chart pre-delete hook)
//	leanmesh analyze      per pod: governing policy, library, proxy version, istiod's ACK state, scrape
//	leanmesh version      print the version
package main

import (
	"fmt"
	"os"
)

// version is set at link time (-X main.version=...) by `make controller` and
// the image's build stage, both from the chart's appVersion.
var version = "dev"

const usage = `usage: leanmesh <command> [flags]

commands:
  controller   run the TelemetryPolicy controller
  render       write plain EnvoyFilter manifests (make manifests)
  compare      compare two Prometheus text expositions (Istio's vs leanmesh's)
  uninstall    stop the controller, delete every EnvoyFilter/Telemetry leanmesh rendered (chart pre-delete hook)
  analyze      per pod: governing policy, library label, proxy version, istiod's LDS ACK/NACK, scrape target
  version      print the version

Run leanmesh <command> -h for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var code int
	switch os.Args[1] {
	case "controller":
		code = runController(args)
	case "render":
		code = runRender(args, os.Stdout, os.Stderr)
	case "compare":
		code = runCompare(args, os.Stdout, os.Stderr)
	case "uninstall":
		code = runUninstall(args, os.Stdout, os.Stderr)
	case "analyze":
		code = runAnalyze(args, os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Fprintln(os.Stdout, version)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
	default:
		fmt.Fprintf(os.Stderr, "leanmesh: unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}
