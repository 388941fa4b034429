# krelay: `make` builds build/krelay; `make test` runs every test under
# ASan+UBSan; `make demo` runs the relay on loopback and says what it did.
CC      ?= cc
PKGS     = openssl liburing libcares libunbound libcurl zlib hiredis
CSTD     = -std=c17 -D_GNU_SOURCE
WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
PKGCFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKGLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CSTD) $(WARN) $(CPPFLAGS) $(CFLAGS) $(PKGCFLAGS) -Ikernel -Irelay -MMD -MP
LDLIBS  = $(PKGLIBS) -lpthread
SAN     = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

KERNEL_PURE = kernel/wheel.c
KERNEL_SRCS = kernel/ring.c kernel/probe.c kernel/ktls.c kernel/xprt.c $(KERNEL_PURE)
RELAY_PURE  = relay/config.c relay/smtp_parse.c relay/smtp_data.c relay/spool_format.c \
              relay/route.c relay/dsn.c relay/tls_policy.c relay/safe.c relay/client_count.c \
              relay/queue_policy.c relay/submit.c relay/sm_import.c relay/strbuf.c relay/sm_qf.c relay/seg_format.c \
              relay/dane.c relay/sts_policy.c relay/tlsrpt.c relay/qshape.c relay/shaping.c relay/throttle.c relay/metrics_http.c relay/metrics.c
RELAY_SRCS  = $(RELAY_PURE) relay/log.c relay/tls_ctx.c relay/spool.c relay/spool_seg.c relay/spool_msg.c relay/smtp_server.c \
              relay/dns.c relay/dns_ub.c relay/sts.c relay/tlsrpt_log.c relay/tlsrpt_cli.c relay/smtp_client.c relay/queue.c relay/queue_dest.c relay/queue_conn.c \
              relay/queue_interactive.c relay/queue_admin.c relay/queue_shaping.c relay/throttle_redis.c relay/bounce.c relay/queue_cli.c relay/runtime.c relay/service.c relay/runas.c relay/sendmail_cli.c relay/sm_import_cli.c relay/sm_queue.c relay/state.c relay/metrics_srv.c relay/worker.c relay/check.c relay/main.c
SRCS        = $(KERNEL_SRCS) $(RELAY_SRCS)
UNIT_TESTS  = test_config test_smtp_parse test_smtp_data test_spool_format test_route test_dsn test_tls_policy test_safe test_client_count test_queue_policy test_submit test_sm_import test_sm_qf test_seg_format test_wheel test_dane test_sts_policy test_tlsrpt test_qshape test_shaping test_throttle test_metrics_http test_metrics
# krelay-bench: the benchmark's SMTP source and sink, on kernel/'s ring and xprt
BENCH_PURE  = bench/bench_util.c bench/bench_hash.c bench/bench_msg.c bench/bench_scan.c \
              bench/bench_stats.c
BENCH_SRCS  = $(BENCH_PURE) bench/bench_tls.c bench/bench_sink.c bench/bench_sink_session.c \
              bench/bench_source.c bench/bench_source_conn.c bench/bench_main.c $(KERNEL_SRCS)

OBJS      = $(SRCS:%.c=build/obj/%.o)
TEST_OBJS = $(SRCS:%.c=build/test/obj/%.o)
PURE_TEST_OBJS = $(RELAY_PURE:%.c=build/test/obj/%.o) $(KERNEL_PURE:%.c=build/test/obj/%.o)
BENCH_OBJS      = $(BENCH_SRCS:%.c=build/obj/%.o)
BENCH_TEST_OBJS = $(BENCH_SRCS:%.c=build/test/obj/%.o)

.PHONY: all test test-ktls unit fuzz-build fuzz demo bench soak deps format check-format clean install install-sendmail man deb
all: build/krelay build/krelay-bench

deps:
	@scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh

# V=1 shows the full commands.
Q = $(if $(V),,@)

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

build/test/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC+SAN  $<")
	$(Q)$(CC) $(ALL_CFLAGS) -O1 $(SAN) -c $< -o $@

build/krelay: $(OBJS)
	$(if $(Q),@echo "  LINK    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

build/test/krelay: $(TEST_OBJS)
	$(if $(Q),@echo "  LINK    $@ (ASan+UBSan)")
	$(Q)$(CC) $(SAN) -o $@ $(TEST_OBJS) $(LDLIBS)

build/krelay-bench: $(BENCH_OBJS)
	$(if $(Q),@echo "  LINK    $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(BENCH_OBJS) $(LDLIBS) -lm

build/test/krelay-bench: $(BENCH_TEST_OBJS)
	$(if $(Q),@echo "  LINK    $@ (ASan+UBSan)")
	$(Q)$(CC) $(SAN) -o $@ $(BENCH_TEST_OBJS) $(LDLIBS) -lm

# The bench's pure parts (hash, messages, DATA scanner, sizes), unit-tested.
build/test/unit/test_bench: bench/test_bench.c $(BENCH_PURE:%.c=build/test/obj/%.o)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  UNIT    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -O1 $(SAN) -Itests/unit -Ibench -o $@ $^ $(LDLIBS) -lm

build/test/unit/%: tests/unit/%.c $(PURE_TEST_OBJS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  UNIT    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -O1 $(SAN) -Itests/unit -o $@ $< $(PURE_TEST_OBJS) $(LDLIBS)

unit: $(UNIT_TESTS:%=build/test/unit/%) build/test/unit/test_bench build/test/dnsq build/test/keyupdate_peer

# keyupdate_peer: an SMTP peer that sends TLS 1.3 KeyUpdates, for test_keyupdate.py
build/test/keyupdate_peer: tests/tools/keyupdate_peer.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  TOOL    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $< $(LDLIBS)

# dnsq: resolves through relay/dns.c on a ring, for tests/integration/test_dns.py
build/test/dnsq: tests/tools/dnsq.c relay/dns.c relay/dns_ub.c relay/route.c kernel/ring.c kernel/wheel.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  TOOL    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $^ $(LDLIBS)

# libFuzzer harnesses (tests/fuzz/fuzz_*.c) over the pure modules, built
# with clang; `make fuzz FUZZ_S=600` runs each for FUZZ_S seconds from a copy
# of its committed corpus, after every committed reproducer.
FUZZ_TARGETS = smtp_parse smtp_data config spool_format route tls_policy dsn sm_qf seg_format sts_policy shaping
FUZZ_CC      = clang
FUZZ_SAN     = -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  = $(CSTD) -g -O1 $(PKGCFLAGS) -Ikernel -Irelay -Itests/fuzz
FUZZ_OBJS    = $(RELAY_PURE:%.c=build/fuzz/obj/%.o)
FUZZ_S      ?= 600

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  FUZZER  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) $(LDLIBS)

fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
.SECONDARY: $(FUZZ_OBJS)

fuzz: deps
	$(MAKE) fuzz-build build/test/krelay
	FUZZ_S=$(FUZZ_S) tests/fuzz/run.sh $(FUZZ_TARGETS)
	KRELAY_BIN=$(CURDIR)/build/test/krelay FUZZ_SESSION_S=$(FUZZ_S) /usr/bin/python3 -m pytest \
		-p no:cacheprovider -q -s tests/integration/test_session_fuzz.py

test: deps
	$(MAKE) build/krelay build/krelay-bench build/test/krelay build/test/krelay-bench unit \
		fuzz-build
	tests/run.sh

# The kTLS suite alone: Debian's kernel in qemu (also part of make test).
test-ktls: deps
	$(MAKE) build/krelay build/krelay-bench build/test/krelay
	$(MAKE) build/test/keyupdate_peer
	KRELAY_BIN=$(CURDIR)/build/test/krelay /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs \
		tests/integration/test_ktls_vm.py

demo: deps
	$(MAKE) build/krelay
	scripts/demo.sh

# krelay and Postfix side by side (bench/run.sh); QUICK=1 for a one-minute run.
bench: deps
	$(MAKE) build/krelay build/krelay-bench
	bench/run.sh

# The fault soak against the release build (tests/soak/soak.py): kill -9,
# flush/hold/release, SIGTERM, SIGHUP under load and a disk that fills up.
SOAK_KILLS ?= 100
SOAK_FLUSH_S ?= 60
SOAK_STOPS ?= 20
SOAK_HUPS ?= 10
SOAK_DISK_FULL ?= 1
soak: deps
	$(MAKE) build/krelay
	/usr/bin/python3 tests/soak/soak.py --krelay build/krelay --kills $(SOAK_KILLS) \
		--flush-s $(SOAK_FLUSH_S) --stops $(SOAK_STOPS) --hups $(SOAK_HUPS) \
		--disk-full $(SOAK_DISK_FULL)

format:
	clang-format -i $(SRCS) kernel/*.h relay/*.h tests/unit/*.c tests/unit/*.h tests/tools/*.c tests/fuzz/*.c tests/fuzz/*.h \
		bench/*.c bench/*.h

check-format:
	clang-format --dry-run --Werror $(SRCS) kernel/*.h relay/*.h tests/unit/*.c tests/unit/*.h tests/tools/*.c tests/fuzz/*.c tests/fuzz/*.h \
		bench/*.c bench/*.h

# `make install` (DESTDIR for staging, PREFIX and the dirs below as usual):
# the binaries, the man pages, a safe /etc/krelay/krelay.conf (kept when one
# is there already) and the queue directory (mode 0700).
PREFIX        ?= /usr
sbindir       ?= $(PREFIX)/sbin
bindir        ?= $(PREFIX)/bin
mandir        ?= $(PREFIX)/share/man
sysconfdir    ?= /etc
localstatedir ?= /var
systemdunitdir ?= /lib/systemd/system
install: build/krelay build/krelay-bench
	install -D -m 0755 build/krelay $(DESTDIR)$(sbindir)/krelay
	install -D -m 0755 build/krelay-bench $(DESTDIR)$(bindir)/krelay-bench
	install -D -m 0644 man/krelay.8 $(DESTDIR)$(mandir)/man8/krelay.8
	install -D -m 0644 man/krelay.conf.5 $(DESTDIR)$(mandir)/man5/krelay.conf.5
	install -D -m 0644 man/krelay-bench.1 $(DESTDIR)$(mandir)/man1/krelay-bench.1
	test -e $(DESTDIR)$(sysconfdir)/krelay/krelay.conf || \
	    install -D -m 0644 scripts/krelay.conf $(DESTDIR)$(sysconfdir)/krelay/krelay.conf
	install -d -m 0700 $(DESTDIR)$(localstatedir)/spool/krelay
	install -D -m 0644 scripts/krelay.service $(DESTDIR)$(systemdunitdir)/krelay.service
	install -D -m 0644 scripts/krelay-tlsrpt.service $(DESTDIR)$(systemdunitdir)/krelay-tlsrpt.service
	install -D -m 0644 scripts/krelay-tlsrpt.timer $(DESTDIR)$(systemdunitdir)/krelay-tlsrpt.timer
	@echo "installed; the relay, started as root, runs as the user krelay:"
	@echo "  adduser --system --group --home $(localstatedir)/spool/krelay krelay"
	@echo "  chown krelay:krelay $(DESTDIR)$(localstatedir)/spool/krelay"

# `make install-sendmail`: krelay also as /usr/sbin/sendmail, newaliases and
# /usr/bin/mailq (Sendmail's command line, see README), replacing what is
# there: only for a machine where krelay is the mail system.
install-sendmail: install
	ln -sf krelay $(DESTDIR)$(sbindir)/sendmail
	ln -sf krelay $(DESTDIR)$(sbindir)/newaliases
	install -d $(DESTDIR)$(bindir)
	ln -sf $(sbindir)/krelay $(DESTDIR)$(bindir)/mailq

# `make deb`: build/deb/krelay_VERSION_ARCH.deb, built by dpkg-buildpackage
# from debian/ in a copy of the tree (so build/ and the parent directory stay
# as they are), then checked by lintian: an error or a warning fails it.
VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
deb: deps
	rm -rf build/deb && mkdir -p build/deb/src/krelay-$(VERSION)
	tar -c --exclude=./build --exclude=./.git . | tar -x -C build/deb/src/krelay-$(VERSION)
	cd build/deb/src/krelay-$(VERSION) && dpkg-buildpackage -us -uc -b
	mv build/deb/src/*.deb build/deb/src/*.buildinfo build/deb/src/*.changes build/deb/
	rm -rf build/deb/src
	lintian --fail-on error,warning build/deb/krelay_$(VERSION)_*.deb
	@ls build/deb/*.deb

# man/krelay.conf.5 is written from config.c's option table and the README's
# (scripts/mkman.py refuses when they disagree; make test checks it is current).
man:
	/usr/bin/python3 scripts/mkman.py

clean:
	rm -rf build/obj build/test build/krelay build/krelay-bench

-include $(OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(BENCH_OBJS:.o=.d) $(BENCH_TEST_OBJS:.o=.d)
