package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// RESPProxy stands between a client and a real Redis, one command at a time:
// it forwards each command and relays the reply, or, for the commands it is
// told to refuse, answers an error reply of its own, as a Redis that is
// misconfigured, full, loading or refusing the client would. It speaks RESP2
// and RESP3.
type RESPProxy struct {
	t        testing.TB
	upstream string
	ln       net.Listener
	wg       sync.WaitGroup

	mu       sync.Mutex
	reply    string          // "" forwards everything
	commands map[string]bool // refused commands (upper case); empty: all
	conns    []net.Conn
}

// StartRESPProxy listens on a random local port and forwards to the Redis
// at upstream (host:port) until the test ends.
func StartRESPProxy(t testing.TB, upstream string) *RESPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &RESPProxy{t: t, upstream: upstream, ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *RESPProxy) Addr() string { return p.ln.Addr().String() }

// Refuse answers reply (an error reply without its leading '-', such as
// "MISCONF …") to commands (every command when none is named); Refuse("")
// forwards everything again.
func (p *RESPProxy) Refuse(reply string, commands ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reply, p.commands = reply, map[string]bool{}
	for _, c := range commands {
		p.commands[strings.ToUpper(c)] = true
	}
}

func (p *RESPProxy) refusal(cmd []byte) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reply == "" {
		return "", false
	}
	if len(p.commands) == 0 || p.commands[commandName(cmd)] {
		return p.reply, true
	}
	return "", false
}

// commandName is the upper-cased first element of a command array.
func commandName(cmd []byte) string {
	lines := bytes.SplitN(cmd, []byte("\r\n"), 4)
	if len(lines) < 3 {
		return ""
	}
	return strings.ToUpper(string(lines[2]))
}

func (p *RESPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			p.t.Errorf("RESP proxy: dial Redis at %s: %v", p.upstream, err)
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			defer up.Close()
			p.serve(c, up)
		}()
	}
}

func (p *RESPProxy) serve(client, up net.Conn) {
	fromClient, fromUp := bufio.NewReader(client), bufio.NewReader(up)
	var cmd, reply bytes.Buffer
	for {
		cmd.Reset()
		if err := readRESP(fromClient, &cmd); err != nil {
			return
		}
		if msg, refused := p.refusal(cmd.Bytes()); refused {
			if _, err := client.Write([]byte("-" + msg + "\r\n")); err != nil {
				return
			}
			continue
		}
		reply.Reset()
		if _, err := up.Write(cmd.Bytes()); err != nil {
			return
		}
		if err := readRESP(fromUp, &reply); err != nil {
			return
		}
		if _, err := client.Write(reply.Bytes()); err != nil {
			return
		}
	}
}

// readRESP copies one RESP2 or RESP3 value from r to w.
func readRESP(r *bufio.Reader, w *bytes.Buffer) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 {
		return fmt.Errorf("short RESP line %q", line)
	}
	w.Write(line)
	count := func() (int, error) { return strconv.Atoi(string(line[1 : len(line)-2])) }
	switch line[0] {
	case '+', '-', ':', '_', '#', ',', '(':
		return nil
	case '$', '=', '!': // bulk string, verbatim string, bulk error
		n, err := count()
		if err != nil || n < 0 {
			return err
		}
		_, err = io.CopyN(w, r, int64(n)+2)
		return err
	case '*', '~', '>', '%', '|': // array, set, push; map, attribute: pairs
		n, err := count()
		if err != nil {
			return err
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			if err := readRESP(r, w); err != nil {
				return err
			}
		}
		if line[0] == '|' { // an attribute precedes the value it describes
			return readRESP(r, w)
		}
		return nil
	}
	return fmt.Errorf("unknown RESP type in %q", line)
}
