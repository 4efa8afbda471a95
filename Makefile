# The TCP server lab.  Start with README.md.
#
#   make                 build every step and tool
#   make run [STEP=N]    run a step's server on 127.0.0.1:8080 (default: the last step)
#   make test [STEP=N]   run the bats suites against every step (or one)
#   make valgrind [STEP=N]   the same, with the server under memcheck
#   make san [STEP=N]    the same, against ASan+UBSan builds
#   make fuzz            fuzz the frame decoder (FUZZ_SECONDS=30)
#   make bench [STEPS="03 04"]   the benchmark matrix against tools/ref-echo
#   make diff STEP=N     what changed from step N-1 to step N
#   make format          clang-format every C file
#   make clean

STEP_DIRS := $(sort $(wildcard step[0-9][0-9]-*))
# STEP=3, STEP=03 or STEP=step03-epoll-et all name the same step.
TEST_ARGS := $(if $(STEP),--step $(STEP))
FUZZ_SECONDS ?= 30
PORT      ?= 8080

.PHONY: all run test valgrind san fuzz bench diff format clean
all:
	@for s in $(STEP_DIRS); do $(MAKE) -s -C $$s all || exit 1; done
	@$(MAKE) -s -C tools all
	@$(MAKE) -s -C tests all

run: all
	@dir=$$(tools/step-dir $(or $(STEP),last)) || exit 2; \
	echo "Running $$dir/server on 127.0.0.1:$(PORT). In another terminal, talk to it:"; \
	echo "    tools/client -p $(PORT) hello world"; \
	echo "    tools/client -p $(PORT)      (then type lines; Ctrl-D ends)"; \
	echo "Stop it with Ctrl-C."; \
	cd $$dir && exec ./server -p $(PORT) -v

test:
	@tests/run $(TEST_ARGS)

valgrind:
	@tests/run --valgrind $(TEST_ARGS)

san:
	@tests/run --san $(TEST_ARGS)

bench:
	@bench/run $(STEPS)

fuzz:
	@$(MAKE) -s -C fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

# The unified diff from step N-1 to step N, without build products.
diff:
	@test -n "$(STEP)" || { echo "usage: make diff STEP=N (N = 2..$(words $(STEP_DIRS)))"; exit 2; }
	@cur=$$(tools/step-dir $(STEP)) && prev=$$(tools/step-dir $(STEP) -1) || exit 2; \
	color=never; test -t 1 && color=always; \
	diff -ruN -x '*.o' -x '*.d' -x server -x server-san -x server-tsan $$prev $$cur \
	  | { if [ $$color = always ]; then sed -e 's/^-.*/\x1b[31m&\x1b[0m/' -e 's/^+.*/\x1b[32m&\x1b[0m/' -e 's/^@@.*/\x1b[36m&\x1b[0m/'; else cat; fi; }; true

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@for s in $(STEP_DIRS); do $(MAKE) -s -C $$s clean; done
	@$(MAKE) -s -C tools clean
	@$(MAKE) -s -C tests clean
	@$(MAKE) -s -C fuzz clean
