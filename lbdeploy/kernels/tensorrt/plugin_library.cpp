/*
 * Entry points of libternary_trt.so, the plugin library TensorRT loads with
 * IPluginRegistry::loadLibrary (Python: trt.get_plugin_registry().load_library(path)) or
 * `trtexec --dynamicPlugins=libternary_trt.so`.
 *
 * TensorRT calls setLoggerFinder() to hand over its logger and getCreators() to register the
 * creators. There is deliberately no static REGISTER_TENSORRT_PLUGIN: loadLibrary refuses a library
 * whose creators are already registered, which a static registrar would do at dlopen time.
 * To add a plugin to this library: add its creator to the array in getCreators().
 */
#include "ternary_conv_plugin.h"

#include <atomic>
#include <iostream>

namespace {

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

}  // namespace

namespace lbdeploy {

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    nvinfer1::ILogger* logger = finder == nullptr ? nullptr : finder->findLogger();
    if (logger != nullptr) {
        logger->log(severity, message.c_str());
    } else if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
        std::cerr << "[lbdeploy TernaryConv] " << message << std::endl;
    }
}

}  // namespace lbdeploy

extern "C" {

//! Called by TensorRT when the library is loaded: keep the finder to log through TensorRT's logger.
__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    gLoggerFinder.store(finder);
}

//! Called by TensorRT to register the library's plugin creators (IPluginV3 creators).
__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static lbdeploy::TernaryConvPluginCreator plainCreator(lbdeploy::kPluginNamespace);
    static lbdeploy::TernaryConvPluginCreator domainCreator(lbdeploy::kDomainNamespace);
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&plainCreator, &domainCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

}  // extern "C"
