package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// child is the harness's handle on a child process.
type child struct {
	role string
	addr string // where it listens
	cmd  *exec.Cmd
	in   *os.File // its stdin
	outF *os.File // its stdout
	out  *bufio.Reader
	done chan struct{}
}

// callTimeout bounds every command sent to a child; GC and profile files
// are the slow ones.
const callTimeout = 30 * time.Second

// startChild starts this binary as role and waits for its address.
func startChild(ctx context.Context, role, server string, maxLife time.Duration, verbose bool) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-child", role, "-max-life", maxLife.String()}
	if server != "" {
		args = append(args, "-server", server)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdin, cmd.Stdout = inR, outW
	if verbose {
		cmd.Stderr = os.Stderr
	}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	c := &child{role: role, cmd: cmd, in: inW, outF: outR, out: bufio.NewReader(outR), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	line, err := c.readLine(20 * time.Second)
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("%s did not start: %w", role, err)
	}
	addr, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		c.stop()
		return nil, fmt.Errorf("%s said %q instead of ready", role, line)
	}
	c.addr = addr
	return c, nil
}

func (c *child) readLine(timeout time.Duration) (string, error) {
	c.outF.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.out.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// call sends one command and returns the answer.
func (c *child) call(cmd string) (string, error) {
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		return "", fmt.Errorf("%s: %s: %w", c.role, cmd, err)
	}
	line, err := c.readLine(callTimeout)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", c.role, cmd, err)
	}
	if msg, bad := strings.CutPrefix(line, "error "); bad {
		return "", fmt.Errorf("%s: %s: %s", c.role, cmd, msg)
	}
	return line, nil
}

func (c *child) stats() (childStats, error) {
	var s childStats
	line, err := c.call("stats")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal([]byte(line), &s)
	return s, err
}

// stop closes the child's stdin (it exits), and kills it if it has not
// exited within a few seconds.
func (c *child) stop() {
	c.in.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	c.outF.Close()
}
