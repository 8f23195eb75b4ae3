# embed_file.cmake: writes a C file holding a file's bytes (cmake -DINPUT=F -DOUTPUT=X.c -DNAME=SYM -P
# embed_file.cmake): `const char SYM[]` (NUL-terminated) and `const unsigned SYM_LEN` (without the NUL).
# taca-featured compiles its search page (services/featured/page.html) in this way.
file(READ ${INPUT} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){24})" "\\1\n  " bytes "${bytes}")
file(WRITE ${OUTPUT} "/* generated from ${INPUT} by cmake/embed_file.cmake: do not edit */\n"
  "const char ${NAME}[] = {\n  ${bytes}0x00};\nconst unsigned ${NAME}_LEN = ${len};\n")
