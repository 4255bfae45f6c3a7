# slope_add_library(TARGET FILE.slope [FUNCTIONS f ...] [GRADIENTS f ...] [CPU cpu]
#                   [CHECKPOINT spec])
#
# A static library TARGET made by `slopec compile` at build time from FILE.slope: the
# functions FUNCTIONS names and the gradients of those GRADIENTS names (neither: every
# function and every gradient), for CPU (default native: the machine that builds), with
# loops with state checkpointed as `--checkpoint=spec` says. Its header, FILE.h (FILE's name
# without .slope), is on TARGET's include path; TARGET brings what the object needs to link
# (libslope_rt.a, libmvec, libm). Editing FILE.slope, or a new slopec, rebuilds it.
# docs/aot.md says what the header declares.
function(slope_add_library target file)
  cmake_parse_arguments(PARSE_ARGV 2 SLOPE "" "CPU;CHECKPOINT" "FUNCTIONS;GRADIENTS")
  if(SLOPE_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slope_add_library: unknown arguments: ${SLOPE_UNPARSED_ARGUMENTS}")
  endif()
  get_filename_component(source "${file}" ABSOLUTE)
  get_filename_component(stem "${file}" NAME_WE)
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/slope_${target}")
  set(object "${dir}/${stem}.o")
  set(header "${dir}/${stem}.h")
  set(args compile "${source}" -o "${object}" --header "${header}")
  foreach(f IN LISTS SLOPE_FUNCTIONS)
    list(APPEND args --fn "${f}")
  endforeach()
  foreach(f IN LISTS SLOPE_GRADIENTS)
    list(APPEND args --gradient "${f}")
  endforeach()
  if(NOT SLOPE_FUNCTIONS AND NOT SLOPE_GRADIENTS)
    list(APPEND args --grad)
  endif()
  if(SLOPE_CPU)
    list(APPEND args --cpu "${SLOPE_CPU}")
  endif()
  if(SLOPE_CHECKPOINT)
    list(APPEND args "--checkpoint=${SLOPE_CHECKPOINT}")
  endif()
  # In Slope's own build Slope::slopec is an alias: depend on the real target, so that it is
  # built first.
  get_target_property(slopec Slope::slopec ALIASED_TARGET)
  if(NOT slopec)
    set(slopec Slope::slopec)
  endif()
  add_custom_command(
    OUTPUT "${object}" "${header}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${dir}"
    COMMAND "$<TARGET_FILE:${slopec}>" ${args}
    DEPENDS "${source}" ${slopec}
    COMMENT "slopec compile ${file}"
    VERBATIM)
  set_source_files_properties("${object}" PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
  add_library(${target} STATIC "${object}" "${header}")
  set_target_properties(${target} PROPERTIES LINKER_LANGUAGE C)
  target_include_directories(${target} PUBLIC "$<BUILD_INTERFACE:${dir}>")
  # (libmvec: glibc's vector math, on x86-64; an object for a CPU without AVX2 does not use it.)
  find_library(SLOPE_LIBMVEC mvec)
  target_link_libraries(${target} INTERFACE Slope::slope_rt m)
  if(SLOPE_LIBMVEC)
    target_link_libraries(${target} INTERFACE "${SLOPE_LIBMVEC}")
  endif()
endfunction()
