# The TCP server lab.  Start with README.md.
#
#   make                 build every step and tool, and compile_commands.json
#                        (for clangd and editors; `make compile_commands.json`
#                        writes it alone)
#   make run [STEP=N] [PORT=P] [FLAGS="..."]
#                        run a step's server on 127.0.0.1:P (default: the last
#                        step, port 8080) with FLAGS (default -v, which logs
#                        every frame: use FLAGS= for load experiments;
#                        FLAGS="-w 2 -v" from step04)
#   make test [STEP=N]   run the bats suites against every step (or one)
#   make valgrind [STEP=N]   the same, with the server under memcheck
#   make san [STEP=N]    the same, against ASan+UBSan builds
#   make tsan [STEP=N]   from step04: the same, against ThreadSanitizer builds
#   make fuzz            fuzz the frame decoder (FUZZ_SECONDS=30)
#   make bench [STEPS="03 04"]   the benchmark matrix against tools/ref-echo
#   make diff STEP=N [COLOR=always|never|auto]
#                        what changed from step N-1 to step N; coloured when
#                        stdout is a terminal (auto), or always:
#                        make diff STEP=2 COLOR=always | less -R
#   make format          clang-format every C file
#   make lab STEP=N [DEST=DIR]   a graded workspace of step N (lab-work/stepNN-*
#                        by default): its exercises blanked; then, in it,
#                        make grade (its README.md; lab/README.md)
#   make autograder STEP=N [DEST=file.zip]  a Gradescope autograder of step N
#                        (notes/instructors.md)
#   make lab-check [STEP=N]  prove the graded exercises honest (lab/check)
#   make clean
#
# STEP=3, STEP=03 or STEP=step03-epoll-et all name the same step.

STEP_DIRS := $(sort $(wildcard step[0-9][0-9]-*))
TEST_ARGS := $(if $(STEP),--step $(STEP))
FUZZ_SECONDS ?= 30
PORT      ?= 8080
# Plain `=`, not `?=`: only the command line replaces them, never a variable
# that happens to be in the environment.
FLAGS     = -v
COLOR     = auto

.PHONY: all run test valgrind san tsan fuzz bench diff format lab autograder lab-check clean compile_commands.json
all: compile_commands.json
	@for s in $(STEP_DIRS); do $(MAKE) -s -C $$s all || exit 1; done
	@$(MAKE) -s -C tools all
	@$(MAKE) -s -C tests all

# tools/run-server prints how to talk to the server once it is listening.
run: all
	@dir=$$(tools/step-dir $(or $(STEP),last)) || exit 2; \
	exec tools/run-server $$dir $(PORT) $(FLAGS)

# Written by a script from the Makefiles' own commands (tools/compile-db); it
# rewrites the file only when its content changes.
compile_commands.json:
	@tools/compile-db

test:
	@tests/run $(TEST_ARGS)

valgrind:
	@tests/run --valgrind $(TEST_ARGS)

san:
	@tests/run --san $(TEST_ARGS)

tsan:
	@tests/run --tsan $(TEST_ARGS)

bench:
	@bench/run $(STEPS)

# A graded workspace (lab/make-lab): never over an existing one.
lab:
	@test -n "$(STEP)" || { echo "usage: make lab STEP=N [DEST=DIR]" >&2; exit 2; }
	@lab/make-lab $(STEP) $(DEST)

# A Gradescope autograder zip (lab/make-autograder).
autograder:
	@test -n "$(STEP)" || { echo "usage: make autograder STEP=N [DEST=file.zip]" >&2; exit 2; }
	@lab/make-autograder $(STEP) $(DEST)

# The exercises proved honest: the reference scores full marks, the stubs
# zero, each exercise's tests fail without it (lab/check).
lab-check: all
	@lab/check $(STEP)

fuzz:
	@$(MAKE) -s -C fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

# What changed from step N-1 to step N, without build products: a table of
# contents, then the unified diff of each file, headers first (tools/step-diff).
diff:
	@test -n "$(STEP)" || { echo "usage: make diff STEP=N [COLOR=always|never|auto] (N = 2..$(words $(STEP_DIRS)))" >&2; exit 2; }
	@case "$(COLOR)" in always|never|auto) ;; \
	  *) echo "make diff: COLOR is always, never or auto, not '$(COLOR)'" >&2; exit 2 ;; esac; \
	cur=$$(tools/step-dir $(STEP)) || exit 2; \
	if [ "$$cur" = "$$(tools/step-dir first)" ]; then \
	  echo "make diff: $$cur is the first step; there is nothing before it to diff against" >&2; exit 2; fi; \
	prev=$$(tools/step-dir $$cur -1) || exit 2; \
	color=$(COLOR); \
	if [ $$color = auto ]; then color=never; [ -t 1 ] && color=always; fi; \
	tools/step-diff $$prev $$cur $$color

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@for s in $(STEP_DIRS); do $(MAKE) -s -C $$s clean; done
	@$(MAKE) -s -C tools clean
	@$(MAKE) -s -C tests clean
	@$(MAKE) -s -C fuzz clean
