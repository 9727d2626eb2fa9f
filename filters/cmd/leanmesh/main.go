// Command leanmesh is built as leanmesh.so (go build -buildmode=c-shared) and
// loaded by Envoy's golang filters. It is the only package that imports the
// SDK's cgo shims: importing them into a test binary crashes at init.
package main

import (
	"github.com/envoyproxy/envoy/contrib/golang/filters/http/source/go/pkg/http"

	"github.com/leanmesh/leanmesh/filters/httpstats"
)

func init() {
	http.RegisterHttpFilterFactoryAndConfigParser(httpstats.PluginName, httpstats.Factory, httpstats.Parser{})
}

func main() {}
