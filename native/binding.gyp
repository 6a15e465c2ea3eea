# Tessera's peer-credential addon (see peercred.c). Built at install time by the root package's
# "install" script: node-gyp rebuild --directory=native  ->  native/build/Release/peercred.node
{
  "targets": [
    {
      "target_name": "peercred",
      "sources": ["peercred.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
