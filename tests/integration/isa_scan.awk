# isa_scan.awk: reads `objdump -d --no-show-raw-insn` output and prints "FUNCTION: INSTRUCTION" once
# per function that uses an instruction past x86-64-v2 (any VEX/EVEX instruction, ymm/zmm/mask
# registers, BMI1/BMI2, LZCNT/TZCNT, MOVBE) unless its name marks it as dispatched code: a _v3 or
# _avx2 suffix (also before .part/.constprop/._omp_fn). -v allow=REGEX replaces that pattern.
BEGIN { if (allow == "") allow = "(_v3|_avx2)([._]|$)" }
/^[0-9a-f]+ <.*>:$/ { fn = $2; sub(/^</, "", fn); sub(/>:$/, "", fn); next }
/^ *[0-9a-f]+:\t/ {
  n = split($0, f, "\t"); ins = f[n]; split(ins, w, " "); op = w[1]
  bad = ins ~ /%[yz]mm[0-9]|%k[0-7]/ ||
        op ~ /^v(mov|p|add|sub|mul|div|fm|fnm|cvt|broadcast|perm|insert|extract|zero|and|or|xor|sqrt|max|min|shuf|unpck|blend|cmp|round|rcp|rsqrt|hadd|hsub|dp|test|gather|scatter|mask|lddqu|comis|ucomis|ldmxcsr|stmxcsr|aes|pclmul|getexp|getmant|range|reduce|scalef|fixup|compress|expand|align|dbpsad)/ ||
        op ~ /^(andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|tzcnt|movbe)$/
  if (bad && fn !~ allow && !(fn in seen)) { seen[fn] = 1; print fn ": " ins }
}
