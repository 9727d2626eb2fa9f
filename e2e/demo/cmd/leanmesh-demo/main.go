// Command leanmesh-demo runs `make demo`: see package e2e/demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/leanmesh/leanmesh/e2e/demo"
)

func main() {
	once := flag.Bool("once", false, "run every step, check it, clean up and exit (what the tests run)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Once: *once, Out: os.Stdout}); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}
