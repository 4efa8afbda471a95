# lab/blank.awk - blank functions of one C file for a graded exercise.
#
#   awk -v blank="name1=s03-drain,name2=s03-ring" -f lab/blank.awk file.c
#
# Writes file.c to stdout with the body of each named function replaced by
# a stub that marks its parameters used and calls LAB_TODO("s03-drain")
# (lab/lab.h, _Noreturn: nothing passes through it), and #include "lab.h"
# after the file's first #include.  Then every static function no longer
# referenced (a helper only a blanked body used) goes too, with the comment
# just above it: its lines would be part of the answer, and unused it would
# not compile under -Werror.
#
# It relies on the lab's layout (clang-format, STYLE.md): a definition
# starts at column 0 and its opening and closing braces are alone on their
# lines, at column 0.  A named function it cannot find is an error (exit 1),
# so a manifest that names a function that is not there never yields a
# workspace that compiles by accident.
#
# POSIX awk (mawk, Debian's default): no gawk extensions.

BEGIN {
    n = split(blank, pairs, ",")
    for (i = 1; i <= n; i++) {
        split(pairs[i], kv, "=")
        want[kv[1]] = kv[2]
    }
}

{ line[NR] = $0 }

# is_ident(c): can c be part of a C identifier?
function is_ident(c) { return c ~ /[A-Za-z0-9_]/ }

# defines(i, name): does line i start the definition (or declaration) of
# function name - at column 0, name followed by "(" and preceded by the
# start of the line, a space or a "*"?
function defines(i, name,    s, p, before) {
    s = line[i]
    if (s !~ /^[A-Za-z_]/ || s ~ /^(return|if|for|while|switch|do|else|case|typedef)[^A-Za-z0-9_]/)
        return 0
    p = index(s, name "(")
    if (p == 0)
        return 0
    before = p == 1 ? "" : substr(s, p - 1, 1)
    return p == 1 || before == " " || before == "*"
}

# brace_after(i): the line of the "{" that opens the definition starting
# at line i, or 0 when it is a declaration (the signature ends in ";").
function brace_after(i,    j) {
    for (j = i; j <= NR && j < i + 12; j++) {
        if (line[j] == "{")
            return j
        if (line[j] ~ /;[ \t]*(\/\*.*\*\/)?[ \t]*$/)
            return 0
    }
    return 0
}

# close_after(j): the line of the "}" at column 0 that closes the body.
function close_after(j,    k) {
    for (k = j + 1; k <= NR; k++)
        if (line[k] == "}")
            return k
    return 0
}

# params(i, j, name): the parameter names of the signature on lines i..j-1,
# space-separated ("" for (void) and ()).
function params(i, j, name,    sig, k, p, depth, c, list, out, nparts, parts, q, t, m) {
    sig = ""
    for (k = i; k < j; k++)
        sig = sig " " line[k]
    p = index(sig, name "(") + length(name) + 1
    depth = 1
    list = ""
    for (k = p; k <= length(sig) && depth > 0; k++) {
        c = substr(sig, k, 1)
        if (c == "(") depth++
        else if (c == ")") depth--
        if (depth > 0) list = list (depth == 1 && c == "," ? "\001" : c)
    }
    nparts = split(list, parts, "\001")
    out = ""
    for (q = 1; q <= nparts; q++) {
        t = parts[q]
        gsub(/^[ \t]+|[ \t]+$/, "", t)
        if (t == "" || t == "void" || t == "...")
            continue
        if (match(t, /\(\*[ \t]*[A-Za-z_][A-Za-z0-9_]*\)/)) {
            # a function pointer: void (*on_done)(int index)
            t = substr(t, RSTART + 2, RLENGTH - 3)
            gsub(/[ \t]/, "", t)
        } else {
            sub(/\[[^]]*\]$/, "", t) # an array parameter: char name[16]
            match(t, /[A-Za-z_][A-Za-z0-9_]*$/)
            t = substr(t, RSTART, RLENGTH)
        }
        out = out (out == "" ? "" : " ") t
    }
    return out
}

# count_refs(name, from, to): lines outside from..to that mention name as
# a whole word, declarations of it (a prototype) not counted.
function count_refs(name, from, to,    k, s, p, n, rest, before, after) {
    n = 0
    for (k = 1; k <= NR; k++) {
        if (gone[k] || (k >= from && k <= to))
            continue
        if (defines(k, name) && brace_after(k) == 0)
            continue # a prototype
        s = line[k]
        while ((p = index(s, name)) > 0) {
            before = p == 1 ? "" : substr(s, p - 1, 1)
            after = substr(s, p + length(name), 1)
            if (!is_ident(before) && !is_ident(after)) {
                n++
                break
            }
            s = substr(s, p + length(name))
        }
    }
    return n
}

# drop(from, to): remove lines from..to, the comment block just above them,
# and a blank line after.
function drop(from, to,    k) {
    k = from - 1
    if (k >= 1 && line[k] ~ /\*\/[ \t]*$/) {
        while (k >= 1 && line[k] !~ /^[ \t]*\/\*/)
            gone[k--] = 1
        if (k >= 1)
            gone[k] = 1
    }
    for (k = from; k <= to; k++)
        gone[k] = 1
    if (line[to + 1] == "")
        gone[to + 1] = 1
}

END {
    for (name in want) {
        found = 0
        for (i = 1; i <= NR && !found; i++) {
            if (!defines(i, name) || (j = brace_after(i)) == 0)
                continue
            k = close_after(j)
            if (k == 0)
                break
            found = 1
            blanked[name] = 1
            ps = params(i, j, name)
            np = split(ps, pl, " ")
            stub = ""
            for (q = 1; q <= np; q++)
                stub = stub "    (void)" pl[q] ";\n"
            stub = stub "    LAB_TODO(\"" want[name] "\");"
            for (m = j + 1; m < k; m++)
                gone[m] = 1
            body[j] = stub
        }
        if (!found) {
            printf "blank.awk: %s: no definition of %s() (a function at column 0, its braces alone on their lines)\n",
                FILENAME, name > "/dev/stderr"
            failed = 1
        }
    }
    if (failed)
        exit 1
    # Static helpers nothing references any more, until none is left.
    do {
        changed = 0
        for (i = 1; i <= NR; i++) {
            if (gone[i] || line[i] !~ /^static [^=]*\(/)
                continue
            s = line[i]
            p = index(s, "(")
            t = substr(s, 1, p - 1)
            match(t, /[A-Za-z_][A-Za-z0-9_]*$/)
            name = substr(t, RSTART, RLENGTH)
            if (name in blanked || (j = brace_after(i)) == 0 || (k = close_after(j)) == 0)
                continue
            if (count_refs(name, i, k) == 0) {
                drop(i, k)
                for (m = 1; m <= NR; m++) # and its prototype
                    if (!gone[m] && m != i && defines(m, name) && brace_after(m) == 0)
                        drop(m, m)
                changed = 1
            }
        }
    } while (changed)
    included = 0
    for (i = 1; i <= NR; i++) {
        if (gone[i])
            continue
        print line[i]
        if (i in body)
            print body[i]
        if (!included && line[i] ~ /^#include "/) {
            print "#include \"lab.h\""
            included = 1
        }
    }
    if (!included) {
        printf "blank.awk: %s: no #include \"...\" to put lab.h after\n", FILENAME > "/dev/stderr"
        exit 1
    }
}
