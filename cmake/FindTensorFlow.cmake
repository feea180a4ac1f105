# FindTensorFlow: the TensorFlow pip package of the Python interpreter, for custom-op libraries.
#
# Runs ${Python_EXECUTABLE} (find_package(Python COMPONENTS Interpreter) first) and asks
# tf.sysconfig for the compile and link flags of the installed TensorFlow. Defines
#   TensorFlow_FOUND, TensorFlow_VERSION, TensorFlow_INCLUDE_DIR, TensorFlow_CXX11_ABI
#   TensorFlow::framework  INTERFACE IMPORTED target carrying those flags
# If TensorFlow is not importable, TensorFlow_FOUND is false and TensorFlow_ERROR says why.

if(NOT Python_EXECUTABLE)
  find_package(Python COMPONENTS Interpreter)
endif()

set(_tf_probe [=[
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
print("VERSION=" + tf.__version__)
print("CFLAGS=" + "|".join(tf.sysconfig.get_compile_flags()))
print("LFLAGS=" + "|".join(tf.sysconfig.get_link_flags()))
print("INCLUDE=" + tf.sysconfig.get_include())
print("ABI=" + str(tf.sysconfig.CXX11_ABI_FLAG))
]=])

set(TensorFlow_ERROR "")
if(NOT Python_EXECUTABLE)
  set(TensorFlow_ERROR "no Python interpreter found")
else()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "${_tf_probe}"
    RESULT_VARIABLE _tf_rc
    OUTPUT_VARIABLE _tf_out
    ERROR_VARIABLE _tf_err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _tf_rc EQUAL 0)
    string(REGEX MATCH "[A-Za-z]*Error: [^\n]*" _tf_last "${_tf_err}")
    set(TensorFlow_ERROR "'import tensorflow' failed with ${Python_EXECUTABLE}: ${_tf_last}")
  endif()
endif()

if(NOT TensorFlow_ERROR)
  # One line per item; flags within a line are joined by "|" (";" would split the lines list).
  string(REPLACE "\n" ";" _tf_lines "${_tf_out}")
  foreach(_line IN LISTS _tf_lines)
    if(_line MATCHES "^VERSION=(.*)$")
      set(TensorFlow_VERSION "${CMAKE_MATCH_1}")
    elseif(_line MATCHES "^CFLAGS=(.*)$")
      string(REPLACE "|" ";" _tf_cflags "${CMAKE_MATCH_1}")
    elseif(_line MATCHES "^LFLAGS=(.*)$")
      string(REPLACE "|" ";" _tf_lflags "${CMAKE_MATCH_1}")
    elseif(_line MATCHES "^INCLUDE=(.*)$")
      set(TensorFlow_INCLUDE_DIR "${CMAKE_MATCH_1}")
    elseif(_line MATCHES "^ABI=(.*)$")
      set(TensorFlow_CXX11_ABI "${CMAKE_MATCH_1}")
    endif()
  endforeach()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorFlow
  REQUIRED_VARS TensorFlow_INCLUDE_DIR TensorFlow_VERSION
  VERSION_VAR TensorFlow_VERSION
  REASON_FAILURE_MESSAGE "${TensorFlow_ERROR}")

if(TensorFlow_FOUND AND NOT TARGET TensorFlow::framework)
  add_library(TensorFlow::framework INTERFACE IMPORTED)
  # -I flags become include dirs (as SYSTEM, so TF's own warnings stay quiet); the rest
  # (-D_GLIBCXX_USE_CXX11_ABI, -DEIGEN_MAX_ALIGN_BYTES, --std=c++17) are compile options.
  set(_tf_opts "")
  foreach(_flag IN LISTS _tf_cflags)
    if(NOT _flag MATCHES "^-I")
      list(APPEND _tf_opts "${_flag}")
    endif()
  endforeach()
  # -L flags are link options; -l flags go after the objects, as libraries.
  set(_tf_link_opts "")
  set(_tf_link_libs "")
  foreach(_flag IN LISTS _tf_lflags)
    if(_flag MATCHES "^-l")
      list(APPEND _tf_link_libs "${_flag}")
    else()
      list(APPEND _tf_link_opts "${_flag}")
    endif()
  endforeach()
  set_target_properties(TensorFlow::framework PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${TensorFlow_INCLUDE_DIR}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${TensorFlow_INCLUDE_DIR}"
    INTERFACE_COMPILE_OPTIONS "${_tf_opts}"
    INTERFACE_LINK_OPTIONS "${_tf_link_opts}"
    INTERFACE_LINK_LIBRARIES "${_tf_link_libs}")
endif()
