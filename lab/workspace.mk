# A graded lab workspace of @STEP@ (written by make lab).  Read README.md.
#
#   make              build the server (@STEP@/server) and the tools
#   make grade        build, run every suite, print the table and "Score: X/Y"
#                     (FORMAT=tap: the raw TAP too; FORMAT=gradescope:
#                     results.json as well)
#   make hint EX=ID [N=2]   a hint for one exercise (make hint: the list)
#   make test         the suites alone (tests/run --step @NUM@)
#   make valgrind     the suites with the server under memcheck
#   make san          the suites against an ASan+UBSan build
#   make tsan         the suites against a ThreadSanitizer build (step04 on)

STEP := @STEP@
N    ?= 1

.PHONY: all grade hint test valgrind san tsan clean
all:
	@$(MAKE) -s -C $(STEP) all
	@$(MAKE) -s -C tools all

grade:
	@lab/grade

hint:
	@lab/hint "$(EX)" "$(N)"

test: all
	@tests/run --step @NUM@

valgrind: all
	@tests/run --valgrind --step @NUM@

san: all
	@tests/run --san --step @NUM@

tsan: all
	@tests/run --tsan --step @NUM@

clean:
	@$(MAKE) -s -C $(STEP) clean
	@$(MAKE) -s -C tools clean
	@$(MAKE) -s -C tests clean
