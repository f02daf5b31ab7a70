module github.com/teslaproxy/proxy

go 1.26
