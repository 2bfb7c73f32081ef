// Go net/http over crypto/tls, server and client, stdlib only; builds with Go 1.19 and 1.27.
//
//	go_tls server PORT CERT KEY     prints "ready PORT"; /hello 200 "hello from go\n",
//	                                /missing 404; HTTP/1.1 and h2 (ALPN)
//	go_tls client h1|h2 URL...      one connection, the URLs in order; prints
//	                                "STATUS PROTO" for each
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	switch os.Args[1] {
	case "server":
		mux := http.NewServeMux()
		mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello from go")
		})
		l, err := net.Listen("tcp", "127.0.0.1:"+os.Args[2])
		if err != nil {
			panic(err)
		}
		fmt.Printf("ready %s\n", os.Args[2])
		srv := &http.Server{Handler: mux}
		panic(srv.ServeTLS(l, os.Args[3], os.Args[4]))
	case "client":
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		if os.Args[2] == "h2" {
			tr.ForceAttemptHTTP2 = true
		} else {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		c := &http.Client{Transport: tr}
		for _, u := range os.Args[3:] {
			resp, err := c.Get(u)
			if err != nil {
				panic(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Printf("%d %s\n", resp.StatusCode, resp.Proto)
		}
	}
}
