package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// errUsage marks a usage error: alone, the flag package (or the help text)
// already said what was wrong; wrapped with a message, main prints it.
var errUsage = errors.New("usage")

// flagSet is a flag.FlagSet whose help text is grouped by section.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	about    string
	sections []section
	logFmt   enumFlag
	logLevel enumFlag
	progress *time.Duration
}

type section struct {
	name  string
	flags []string
}

func newFlagSet(name, synopsis, about string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, about: about}
	fs.logFmt = enumFlag{val: "text", allowed: []string{"text", "json"}}
	fs.logLevel = enumFlag{val: "info", allowed: []string{"debug", "info", "warn", "error"}}
	fs.Usage = fs.usage
	return fs
}

// section starts a help section; flags defined after it belong to it.
func (fs *flagSet) section(name string) { fs.sections = append(fs.sections, section{name: name}) }

func (fs *flagSet) note(name string) {
	if len(fs.sections) == 0 {
		fs.section("flags")
	}
	s := &fs.sections[len(fs.sections)-1]
	s.flags = append(s.flags, name)
}

func (fs *flagSet) String(name, value, usage string) *string {
	fs.note(name)
	return fs.FlagSet.String(name, value, usage)
}

func (fs *flagSet) Bool(name string, value bool, usage string) *bool {
	fs.note(name)
	return fs.FlagSet.Bool(name, value, usage)
}

func (fs *flagSet) Int(name string, value int, usage string) *int {
	fs.note(name)
	return fs.FlagSet.Int(name, value, usage)
}

// setFlags lists the flags given on the command line.
func (fs *flagSet) setFlags() []string {
	var names []string
	fs.Visit(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

func isLogFlag(name string) bool {
	return name == "log-format" || name == "log-level" || name == "progress-every"
}

func (fs *flagSet) Var(v flag.Value, name, usage string) {
	fs.note(name)
	fs.FlagSet.Var(v, name, usage)
}

func (fs *flagSet) logFlags() {
	fs.section("logging")
	fs.Var(&fs.logFmt, "log-format", "log format: text or json")
	fs.Var(&fs.logLevel, "log-level", "least level logged: debug, info, warn or error")
	fs.progress = fs.Duration("progress-every", 5*time.Second, "how often to print a progress line when stdout is not a terminal")
	fs.note("progress-every")
}

func (fs *flagSet) usage() {
	out := fs.Output()
	fmt.Fprintf(out, "Usage: pxeswarm %s %s\n\n%s\n", fs.Name(), fs.synopsis, strings.TrimSpace(fs.about))
	for _, s := range fs.sections {
		fmt.Fprintf(out, "\n[%s]\n", s.name)
		for _, name := range s.flags {
			f := fs.Lookup(name)
			typ, usage := flag.UnquoteUsage(f)
			line := "  --" + name
			if typ != "" {
				line += " " + typ
			}
			fmt.Fprintf(out, "%-28s %s", line, usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(out)
		}
	}
}

// parse parses args; -h prints help and returns errUsage-free nil.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	return nil
}

var errHelp = fmt.Errorf("%w (help shown)", errUsage)

func (fs *flagSet) logger() *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(fs.logLevel.val))
	opts := &slog.HandlerOptions{Level: lvl}
	var w io.Writer = os.Stderr
	if fs.logFmt.val == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// repeatFlag collects a repeatable flag whose values may hold commas
// (console=ttyS0,115200).
type repeatFlag []string

func (r *repeatFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(s string) error { *r = append(*r, s); return nil }

// enumFlag accepts one of a fixed set of values, checked when set.
type enumFlag struct {
	val     string
	allowed []string
}

func (e *enumFlag) String() string { return e.val }
func (e *enumFlag) Set(s string) error {
	for _, a := range e.allowed {
		if s == a {
			e.val = s
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(e.allowed, ", "))
}

// bytesFlag reads sizes such as 8MiB.
type bytesFlag int64

func (b *bytesFlag) String() string { return bytesize.Format(int64(*b)) }
func (b *bytesFlag) Set(s string) error {
	n, err := bytesize.Parse(s)
	if err != nil {
		return err
	}
	*b = bytesFlag(n)
	return nil
}
