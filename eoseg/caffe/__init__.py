"""Caffe interop without Caffe: the protobuf wire format, .caffemodel and .prototxt files,
and the mapping of the method's published SegNet weights onto eoseg's SegNet.

- :mod:`eoseg.caffe.wire`: protobuf binary encoding (varints, fixed-width and
  length-delimited fields), written for this project.
- :mod:`eoseg.caffe.files`: .caffemodel reader and writer, .prototxt text reader.
- :mod:`eoseg.caffe.segnet`: SegNet weights and the preprocessing they expect.
"""
