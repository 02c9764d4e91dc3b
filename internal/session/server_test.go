package session

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/wire"
)

const customServerScheme = "stop=3\n0=20-20\n1=200-300\n2=100-100,c,700-900"

func TestServerVersionNegotiation(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		custom := mustScheme(t, customServerScheme)
		def := padding.Default()
		tests := []struct {
			name       string
			settings   []byte
			wantServer bool // ServerSettings v=2
			wantUpdate bool // UpdatePaddingScheme with custom's raw text
			wantPeerV  int
		}{
			{"v2-md5-differs", settingsBody("v", "2", "client", "x/1", "padding-md5", def.MD5()), true, true, 2},
			{"v2-md5-same", settingsBody("v", "2", "client", "x/1", "padding-md5", custom.MD5()), true, false, 2},
			{"v2-no-md5", settingsBody("v", "2", "client", "x/1"), true, true, 2},
			{"v3", settingsBody("v", "3", "padding-md5", custom.MD5()), true, false, 3},
			{"v1-md5-same", settingsBody("v", "1", "client", "x/1", "padding-md5", custom.MD5()), false, false, 1},
			{"v1-md5-differs", settingsBody("v", "1", "padding-md5", def.MD5()), false, true, 1},
			{"no-v", settingsBody("client", "x/1", "padding-md5", custom.MD5()), false, false, 1},
			{"garbage-v", settingsBody("v", "two", "padding-md5", custom.MD5()), false, false, 1},
			{"keys-reordered", settingsBody("padding-md5", custom.MD5(), "client", "x/1", "v", "2"), true, false, 2},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				leakCheck(t)
				env := startServer(t, kind, Config{ServerScheme: func() *padding.Scheme { return custom }})
				env.p.send(wire.CmdSettings, 0, tt.settings)
				got := env.p.barrier()
				var sawServer, sawUpdate bool
				for _, f := range got {
					switch {
					case f.cmd == wire.CmdServerSettings && !sawServer:
						sawServer = true
						if f.sid != 0 || string(f.data) != "v=2" {
							t.Errorf("ServerSettings %v, want sid=0 \"v=2\"", f)
						}
					case f.cmd == wire.CmdUpdatePaddingScheme && !sawUpdate:
						sawUpdate = true
						if f.sid != 0 || !bytes.Equal(f.data, []byte(customServerScheme)) {
							t.Errorf("UpdatePaddingScheme %v, want the scheme's raw text", f)
						}
					default:
						t.Errorf("unexpected frame %v", f)
					}
				}
				if sawServer != tt.wantServer {
					t.Errorf("ServerSettings sent: %v, want %v", sawServer, tt.wantServer)
				}
				if sawUpdate != tt.wantUpdate {
					t.Errorf("UpdatePaddingScheme sent: %v, want %v", sawUpdate, tt.wantUpdate)
				}
				if v := env.sess.PeerVersion(); v != tt.wantPeerV {
					t.Errorf("PeerVersion = %d, want %d", v, tt.wantPeerV)
				}
				// A second Settings frame is ignored.
				env.p.send(wire.CmdSettings, 0, settingsBody("v", "2", "padding-md5", "0"))
				env.p.expectQuiet("second Settings")
			})
		}
	})
}

// TestServerDefaultScheme: without Config.ServerScheme the default scheme is
// pushed to a client announcing another md5, and not to one announcing it.
func TestServerDefaultScheme(t *testing.T) {
	leakCheck(t)
	env := startServer(t, connKinds[0], Config{})
	env.p.send(wire.CmdSettings, 0, settingsBody("v", "2", "padding-md5", "00000000000000000000000000000000"))
	env.p.expect(wire.CmdServerSettings, 0)
	f := env.p.expect(wire.CmdUpdatePaddingScheme, 0)
	if string(f.data) != padding.DefaultText {
		t.Fatalf("pushed %q, want the default scheme", f.data)
	}
	if md5 := padding.Default().MD5(); md5 != "75cff2ad89aadf5e257059ee571ebe11" {
		t.Fatalf("default md5 %s", md5)
	}

	env2 := startServer(t, connKinds[0], Config{})
	env2.p.send(wire.CmdSettings, 0, settingsBody("v", "2", "padding-md5", "75cff2ad89aadf5e257059ee571ebe11"))
	env2.p.expect(wire.CmdServerSettings, 0)
	env2.p.expectQuiet("same md5")
}

func TestServerSYNACK(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		for _, v := range []string{"", "1", "2"} {
			t.Run("v="+v, func(t *testing.T) {
				leakCheck(t)
				env := startServer(t, kind, Config{})
				env.hello(t, v)
				v2 := v == "2"

				st := env.open(t, 1, testDst)
				dst, err := wire.ReadAddr(st, wire.SOCKS)
				if err != nil || dst != testDst {
					t.Fatalf("destination %v, %v; want %v", dst, err, testDst)
				}
				if err := st.SendSYNACK(nil); err != nil {
					t.Fatalf("SendSYNACK(nil): %v", err)
				}
				if v2 {
					f := env.p.expect(wire.CmdSYNACK, 1)
					if len(f.data) != 0 {
						t.Fatalf("SYNACK for success carries %q", f.data)
					}
				}
				// Only the first call sends; a v1 client never gets SYNACK.
				if err := st.SendSYNACK(errors.New("late")); err != nil {
					t.Fatalf("second SendSYNACK: %v", err)
				}
				env.p.expectQuiet("second SendSYNACK / v1 SendSYNACK")

				st2 := env.open(t, 2, testDst)
				if err := st2.SendSYNACK(errors.New("refused")); err != nil {
					t.Fatalf("SendSYNACK(refused): %v", err)
				}
				if v2 {
					f := env.p.expect(wire.CmdSYNACK, 2)
					if string(f.data) != "refused" {
						t.Fatalf("SYNACK text %q, want refused", f.data)
					}
				}
				env.p.expectQuiet("after SendSYNACK(refused)")

				// An error with empty text still reports an error.
				st3 := env.open(t, 3, testDst)
				if err := st3.SendSYNACK(errors.New("")); err != nil {
					t.Fatal(err)
				}
				if v2 {
					f := env.p.expect(wire.CmdSYNACK, 3)
					if len(f.data) == 0 {
						t.Fatalf("SYNACK for an error with empty text is empty: reads as success")
					}
				}
				env.p.expectQuiet("after SendSYNACK(empty error)")
			})
		}
	})
}

func TestServerSYNBeforeSettings(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		for _, first := range []struct {
			name   string
			frames []byte
		}{
			{"syn", frameBytes(wire.CmdSYN, 1, nil)},
			{"waste-then-syn", append(frameBytes(wire.CmdWaste, 0, make([]byte, 10)), frameBytes(wire.CmdSYN, 1, nil)...)},
			{"heart-then-syn", append(frameBytes(wire.CmdHeartRequest, 5, nil), frameBytes(wire.CmdSYN, 1, nil)...)},
		} {
			t.Run(first.name, func(t *testing.T) {
				leakCheck(t)
				env := startServer(t, kind, Config{})
				env.p.write(first.frames)
				got := env.p.expectEnd()
				var alert *frame
				for i, f := range got {
					switch f.cmd {
					case wire.CmdAlert:
						alert = &got[i]
					case wire.CmdHeartResponse:
					default:
						t.Errorf("unexpected frame %v", f)
					}
				}
				if alert == nil || len(alert.data) == 0 {
					t.Fatalf("frames %v: want an Alert with text", got)
				}
				err := waitErr(t, env.served, "Serve")
				if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrSessionClosed) {
					t.Errorf("Serve = %v, want ErrProtocol and ErrSessionClosed", err)
				}
				if len(env.streams) != 0 {
					t.Errorf("OnStream called for a SYN before Settings")
				}
				env.served <- err // for the cleanup
			})
		}
	})
}

func TestHeartbeatAnswered(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("server", func(t *testing.T) {
			leakCheck(t)
			env := startServer(t, kind, Config{})
			for _, sid := range []uint32{0, 1, 77, 0xffffffff} {
				env.p.send(wire.CmdHeartRequest, sid, nil)
				f := env.p.expect(wire.CmdHeartResponse, sid)
				if len(f.data) != 0 {
					t.Errorf("HeartResponse carries data %q", f.data)
				}
			}
			// A HeartRequest with data (not in the protocol) is still answered
			// and its data skipped.
			env.p.write(rawFrame(byte(wire.CmdHeartRequest), 9, 20))
			env.p.expect(wire.CmdHeartResponse, 9)
			// A HeartResponse nobody asked for is ignored.
			env.p.send(wire.CmdHeartResponse, 3, nil)
			env.p.expectQuiet("unsolicited HeartResponse")
		})
		t.Run("client", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			for _, sid := range []uint32{0, 1, 77, 0xffffffff} {
				env.p.send(wire.CmdHeartRequest, sid, nil)
				if sid == 0 {
					// the first write of the session carries the Settings
					// and the HeartRequest that announces a probing client
					env.p.expect(wire.CmdSettings, 0)
					env.p.expect(wire.CmdHeartRequest, 0)
					env.first = false
				}
				env.p.expect(wire.CmdHeartResponse, sid)
			}
			st := env.open(t, testDst)
			sendAndRead(t, env.p, st, "still fine")
		})
	})
}

func TestPing(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("client", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			for i := range 3 {
				res := make(chan error, 1)
				go func() {
					_, err := env.sess.Ping(t.Context())
					res <- err
				}()
				if i == 0 {
					env.p.expect(wire.CmdSettings, 0)
					env.p.expect(wire.CmdHeartRequest, 0) // the opening one
				}
				f := env.p.expect(wire.CmdHeartRequest, 0)
				env.p.send(wire.CmdHeartResponse, f.sid, nil)
				if err := waitErr(t, res, "Ping"); err != nil {
					t.Fatalf("Ping: %v", err)
				}
			}
		})
		t.Run("server", func(t *testing.T) {
			leakCheck(t)
			env := startServer(t, kind, Config{})
			env.hello(t, "2")
			res := make(chan error, 1)
			go func() {
				_, err := env.sess.Ping(t.Context())
				res <- err
			}()
			f := env.p.expect(wire.CmdHeartRequest, 0)
			env.p.send(wire.CmdHeartResponse, f.sid, nil)
			if err := waitErr(t, res, "Ping"); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		})
		t.Run("session-dies", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			res := make(chan error, 1)
			go func() {
				_, err := env.sess.Ping(t.Context())
				res <- err
			}()
			env.p.expect(wire.CmdSettings, 0)
			env.p.expect(wire.CmdHeartRequest, 0)
			env.p.conn.Close()
			if err := waitErr(t, res, "Ping"); !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("Ping on a dead session = %v, want ErrSessionClosed", err)
			}
		})
	})
}

func TestServerMaxStreams(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		env := startServer(t, kind, Config{MaxStreams: 2})
		env.hello(t, "2")
		s1 := env.open(t, 1, testDst)
		s2 := env.open(t, 2, testDst)
		env.p.send(wire.CmdSYN, 3, nil)
		env.p.send(wire.CmdPSH, 3, []byte("dropped"))
		env.p.send(wire.CmdSYN, 4, nil)
		got := env.p.barrier()
		if len(got) != 2 || got[0].cmd != wire.CmdFIN || got[0].sid != 3 || got[1].cmd != wire.CmdFIN || got[1].sid != 4 {
			t.Fatalf("frames %v, want FIN 3, FIN 4", got)
		}
		if n := len(env.streams); n != 0 {
			t.Fatalf("OnStream called %d more times beyond MaxStreams", n)
		}
		if n := env.sess.NumStreams(); n != 2 {
			t.Fatalf("NumStreams = %d, want 2", n)
		}
		// The admitted streams still work.
		env.p.send(wire.CmdPSH, 2, []byte("ok"))
		if dst, err := wire.ReadAddr(s2, wire.SOCKS); err != nil || dst != testDst {
			t.Fatalf("destination %v, %v", dst, err)
		}
		if got := readN(t, s2, 2); string(got) != "ok" {
			t.Fatalf("read %q", got)
		}
		// Closing one makes room for another.
		s1.Close()
		env.p.expect(wire.CmdFIN, 1)
		s5 := env.open(t, 5, wire.Addr{})
		sendAndRead(t, env.p, s5, "five")
		env.p.expectQuiet("after admitting stream 5")
	})
}

// TestServerDuplicateSYN: a second SYN for an open stream is ignored.
func TestServerDuplicateSYN(t *testing.T) {
	env, st := serverStream(t, connKinds[0], Config{})
	env.p.send(wire.CmdSYN, 1, nil)
	env.p.send(wire.CmdSYN, 0, nil) // stream 0 is never a stream
	env.p.send(wire.CmdPSH, 1, []byte("abc"))
	env.p.expectQuiet("duplicate SYN")
	if len(env.streams) != 0 {
		t.Fatal("OnStream called for a duplicate SYN or stream 0")
	}
	if got := readN(t, st, 3); string(got) != "abc" {
		t.Fatalf("read %q", got)
	}
}

// TestServerNoOnStream: without OnStream every stream is refused with FIN.
func TestServerNoOnStream(t *testing.T) {
	leakCheck(t)
	sc, pc := pipePair(t)
	sess := NewServer(sc, Config{})
	served := make(chan error, 1)
	go func() { served <- sess.Serve() }()
	p := newPeer(t, pc)
	p.send(wire.CmdSettings, 0, settingsBody("v", "2", "padding-md5", padding.Default().MD5()))
	p.expect(wire.CmdServerSettings, 0)
	p.send(wire.CmdSYN, 1, nil)
	p.expect(wire.CmdFIN, 1)
	pc.Close()
	if err := waitErr(t, served, "Serve"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Serve = %v", err)
	}
	sess.Close()
}

func TestServeTwice(t *testing.T) {
	leakCheck(t)
	env := startServer(t, connKinds[0], Config{})
	env.hello(t, "2") // Serve is running
	if err := env.sess.Serve(); err == nil {
		t.Fatal("second Serve returned nil")
	}
	c := startClient(t, connKinds[0], Config{})
	if err := c.sess.Serve(); err == nil {
		t.Fatal("Serve on a client session returned nil")
	}
	if _, err := env.sess.OpenStream(t.Context(), testDst, nil); err == nil {
		t.Fatal("OpenStream on a server session returned nil")
	}
}

// TestServerPeerCloses: the client going away ends Serve with an error that
// is not a protocol violation, and OnClose sees it.
func TestServerPeerCloses(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		env, st := serverStream(t, kind, Config{})
		env.p.conn.Close()
		err := waitErr(t, env.served, "Serve")
		if !errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrProtocol) {
			t.Errorf("Serve = %v", err)
		}
		env.served <- err
		if cause := waitErr(t, env.closed, "OnClose"); cause == nil {
			t.Errorf("OnClose(nil) for a peer that went away")
		}
		if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrSessionClosed) || err == io.EOF {
			t.Errorf("Read after the session died = %v", err)
		}
	})
}
