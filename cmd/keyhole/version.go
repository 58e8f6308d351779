package main

import (
	"runtime"
	"runtime/debug"
)

// buildVersion and buildCommit are stamped at link time, as the Dockerfile does:
//
//	go build -ldflags "-X main.buildVersion=v1.2.3 -X main.buildCommit=$(git rev-parse HEAD)" ./cmd/keyhole
//
// Left empty, release and commit read the binary's build information instead.
var (
	buildVersion = ""
	buildCommit  = ""
)

// release returns the version the binary was stamped with, else the module's version
// (go install ...@v1.2.3), else "devel" (a plain go build, whose module version is
// "(devel)").
func release() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// commit returns the commit the binary was stamped with, else the VCS revision go build
// recorded (with "-dirty" when the work tree had changes), else "".
func commit() string {
	if buildCommit != "" {
		return buildCommit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// version returns release and commit as one string, "v1.2.3 (0123abcd...)" or "v1.2.3"
// when the commit is unknown: what the startup log, HAR exports, OCSF events, traces and
// the admin API name the gateway by.
func version() string {
	if c := commit(); c != "" {
		return release() + " (" + c + ")"
	}
	return release()
}

// versionLine is what keyhole version prints.
func versionLine() string {
	c := commit()
	if c == "" {
		c = "unknown"
	}
	return "keyhole " + release() + " (commit " + c + ", " + runtime.Version() + ")"
}
