package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/bb"
	"github.com/u-root/gobusybox/src/pkg/golang"
)

// ErrGoBuild means compiling the agent or the u-root busybox failed.
var ErrGoBuild = errors.New("go build failed")

// ErrNoSource means the Go module to build from was not found.
var ErrNoSource = errors.New("no Go module to build from")

// needSource says what building the boot files needs and what to do
// instead; ErrNoSource errors end with it.
const needSource = "Building the terminals' boot files compiles the agent and u-root: it needs the Go tool chain (go on PATH) " +
	"and a pxeswarm source checkout (run it there, or give its folder with --src; `make initramfs` in the checkout does both). " +
	"Installed from the Debian package? You need not build: `pxeswarm serve` sends the packaged " +
	"/usr/lib/pxeswarm/boot/vmlinuz and initramfs, with this server's plan key appended, as long as <state_dir>/boot has no vmlinuz"

// goEnv is the environment of every compile: a static amd64 binary that
// runs on any x86-64 CPU (GOAMD64=v1: classroom PCs can be old), with
// build IDs and paths that do not vary between builds.
func goEnv(extra ...string) []string {
	env := os.Environ()
	env = append(env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	return append(env, extra...)
}

// goBuildFlags make the binaries reproducible and small: -trimpath drops
// the build machine's paths, -s -w the symbol and DWARF tables, and
// -buildid= the build ID (which would otherwise hash the tool chain's
// inputs into the binary).
var goBuildFlags = []string{"-trimpath", "-ldflags=-s -w -buildid="}

// AgentTags are the build tags of the terminals' agent. noboltdb leaves
// out anacrolix/torrent's bbolt piece-completion store, which the agent
// never uses (it answers completion itself, imager/completion.go): without
// it the agent links no database code at all.
const AgentTags = "noboltdb"

// goEnvVar asks the go command for one of its settings.
func goEnvVar(ctx context.Context, dir, name string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", name)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: running `go env %s` in %s failed: %v. %s", ErrNoSource, name, dir, err, needSource)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleDir finds the Go module holding dir (go env GOMOD).
func moduleDir(ctx context.Context, dir string) (string, error) {
	mod, err := goEnvVar(ctx, dir, "GOMOD")
	if err != nil {
		return "", err
	}
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("%w: %s is not inside a Go module. %s", ErrNoSource, dir, needSource)
	}
	return filepath.Dir(mod), nil
}

// buildAgent compiles the agent package (module mode, from srcDir) to out.
func buildAgent(ctx context.Context, log *slog.Logger, srcDir, pkg, out string) error {
	args := append([]string{"build", "-o", out, "-tags", AgentTags}, goBuildFlags...)
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = srcDir
	cmd.Env = goEnv()
	log.Debug("build: agent", "cmd", "go "+strings.Join(args, " "), "dir", srcDir)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: agent %s: %v\n%s", ErrGoBuild, pkg, err, b)
	}
	return nil
}

// slogPrintf adapts slog to gobusybox's Printf logger.
type slogPrintf struct{ log *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) {
	s.log.Debug("build: busybox: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// buildBusybox compiles the u-root commands into one busybox binary, the
// way u-root does (gobusybox rewrites each command's main package into a
// library and one main dispatches on argv[0]), but compiles it with our
// flags: gobusybox's own build passes -a, which would recompile every
// package on each run, while the Go build cache is safe to use with
// -trimpath (the temporary GOPATH's name does not reach the cache keys or
// the binary).
func buildBusybox(ctx context.Context, log *slog.Logger, srcDir string, cmds []string, tmp, out string) error {
	// gobusybox takes GOROOT from runtime.GOROOT(), which is empty in a
	// binary built with -trimpath (as `make build` builds pxeswarm): ask
	// the go command instead.
	goroot, err := goEnvVar(ctx, srcDir, "GOROOT")
	if err != nil {
		return err
	}
	env := golang.Default(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH("amd64"),
		golang.WithGOROOT(goroot), golang.WithWorkingDir(srcDir), golang.WithGO111MODULE("on"))
	gen := filepath.Join(tmp, "bb")
	opts := &bb.Opts{Env: env, GenSrcDir: gen, CommandPaths: cmds, GenerateOnly: true}
	if err := bb.BuildBusybox(slogPrintf{log}, opts); err != nil {
		return fmt.Errorf("%w: u-root busybox (commands %s): %v: are the commands listed in build/dependencies.go and go.mod?", ErrGoBuild, strings.Join(commandNames(cmds), " "), err)
	}
	// gobusybox leaves a GOPATH tree: the rewritten commands, their
	// dependencies and main in src/bb.u-root.com/bb.
	args := append([]string{"build", "-o", out}, goBuildFlags...)
	// No inlining, as u-root builds it: about 10% smaller, and these are
	// rescue-shell tools, not hot paths.
	args = append(args, "-gcflags=all=-l", ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(gen, "src", "bb.u-root.com", "bb")
	cmd.Env = goEnv("GO111MODULE=off", "GOPATH="+gen, "GOFLAGS=")
	log.Debug("build: busybox", "cmd", "go "+strings.Join(args, " "), "dir", cmd.Dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: u-root busybox: %v\n%s", ErrGoBuild, err, b)
	}
	return nil
}

// commandNames are the names the busybox answers to: the last element of
// each package path.
func commandNames(cmds []string) []string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = path.Base(c)
	}
	return names
}

// CheckSource checks that dir is inside a Go module and the go command
// runs, as InitramfsConfig.Build needs; the error (ErrNoSource) says what
// to do instead.
func CheckSource(ctx context.Context, dir string) error {
	_, err := moduleDir(ctx, dir)
	return err
}
