// Package release gives the controller the version matrix. The table, its
// parser and its rules live in envoy-build (package envoybuild), the one
// place that maps an Istio release to its Envoy and SDK; this package only
// names the parts the controller uses.
package release

import envoybuild "github.com/leanmesh/leanmesh/envoy-build"

// Release is one row of the matrix.
type Release = envoybuild.Row

// Matrix is the parsed table, in file order.
type Matrix = envoybuild.Matrix

// Parse reads a matrix file (the controller's --matrix flag).
var Parse = envoybuild.Parse

// Embedded is the matrix compiled into the binary.
func Embedded() Matrix { return envoybuild.Embedded() }
