# embed_descriptor.cmake: cmake -DIN=FILE -DOUT=FILE.c -DNAME=symbol -P embed_descriptor.cmake writes FILE's bytes
# as `const unsigned char NAME[]` and `const unsigned long NAME_len` (for the descriptor set that
# taca-featured serves through gRPC reflection).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){32})" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from ${IN} by cmake/embed_descriptor.cmake */\n"
  "const unsigned char ${NAME}[] = {\n${body}\n};\nconst unsigned long ${NAME}_len = ${bytes};\n")
