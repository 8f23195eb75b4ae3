# install: `make install` / `cmake --install build [--prefix P]` (PREFIX and DESTDIR as usual:
# `make install PREFIX=/opt/taca DESTDIR=/tmp/stage`). Installs the programs (taca, taca-featured,
# taca-train, and the launcher taca-stack = deploy/stack), the CUDA module next to them where it was
# built (PREFIX/lib, where the programs look for it), the .proto files of the API (PREFIX/share/taca/
# proto, with the descriptor set for gRPC tools), and the docs (PREFIX/share/doc/taca).
include(GNUInstallDirs)
install(TARGETS taca taca-featured taca-train RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/stack DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME taca-stack)
if(TARGET taca_cuda)
  install(TARGETS taca_cuda LIBRARY DESTINATION lib)
endif()
install(FILES ${CMAKE_SOURCE_DIR}/proto/taca/v1/feature_cache.proto DESTINATION ${CMAKE_INSTALL_DATADIR}/taca/proto/taca/v1)
install(FILES ${TACA_DESCRIPTOR_SET} DESTINATION ${CMAKE_INSTALL_DATADIR}/taca/proto)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/storage/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME storage.md)
file(GLOB TACA_DOCS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${TACA_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
