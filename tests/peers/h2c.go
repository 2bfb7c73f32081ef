// Go net/http speaking HTTP/2 without TLS (prior knowledge), server and client, stdlib only
// (Go 1.24 or newer: Protocols.SetUnencryptedHTTP2).
//
//	h2c server PORT        prints "ready PORT"; /hello 200, /missing 404, /error 500,
//	                       /echo answers "got N\n" for a body of N bytes
//	h2c client URL...      one connection, the URLs in order (POST "x=1" to /echo, GET
//	                       otherwise); prints each status
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	switch os.Args[1] {
	case "server":
		mux := http.NewServeMux()
		mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello from go")
		})
		mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %d\n", len(b))
		})
		mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		})
		l, err := net.Listen("tcp", "127.0.0.1:"+os.Args[2])
		if err != nil {
			panic(err)
		}
		fmt.Printf("ready %s\n", os.Args[2])
		srv := &http.Server{Handler: mux, Protocols: &p}
		panic(srv.Serve(l))
	case "client":
		c := &http.Client{Transport: &http.Transport{Protocols: &p}}
		for _, u := range os.Args[2:] {
			var resp *http.Response
			var err error
			if strings.HasSuffix(u, "/echo") {
				resp, err = c.Post(u, "application/x-www-form-urlencoded", strings.NewReader("x=1"))
			} else {
				resp, err = c.Get(u)
			}
			if err != nil {
				panic(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Println(resp.Proto, resp.StatusCode)
		}
	}
}
